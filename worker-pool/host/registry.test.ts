// The registry of ZViz processes on a host, in a temporary directory: what decides whether
// a stopping server takes the shared cgroup folders and nftables table with it.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registeredServers, registerServer, sweepServerEntries, unregisterServer, usesTable } from './registry.js';

describe('server registry', () => {
  let dir = '';
  const alive = new Set<number>();
  const isAlive = (pid: number): boolean => alive.has(pid);

  beforeEach(() => {
    dir = join(mkdtempSync(join(tmpdir(), 'zviz-registry-')), 'servers');
    alive.clear();
  });
  afterEach(() => rmSync(join(dir, '..'), { recursive: true, force: true }));

  it('registers by pid and lists what is registered, ignoring other names', () => {
    registerServer({}, 101, dir);
    registerServer({}, 102, dir);
    writeFileSync(join(dir, 'junk'), '');
    expect(registeredServers(dir).sort()).toEqual([101, 102]);
    expect(registeredServers(join(dir, 'none'))).toEqual([]);
  });

  it("says 'last' only when no other registered server is alive, so an idle sibling keeps what is shared", () => {
    alive.add(101).add(102);
    registerServer({}, 101, dir);
    registerServer({}, 102, dir);
    // 102 has no sandbox at all: only its registration says it is there.
    expect(unregisterServer(isAlive, 101, dir)).toEqual([{}]);
    alive.delete(101);
    expect(unregisterServer(isAlive, 102, dir)).toEqual([]);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("drops the entries of servers that died without unregistering, and does not count them", () => {
    alive.add(101);
    registerServer({}, 101, dir);
    registerServer({}, 103, dir); // SIGKILLed: never unregistered
    expect(sweepServerEntries(isAlive, dir)).toEqual([103]);
    registerServer({}, 104, dir);
    expect(unregisterServer(isAlive, 101, dir)).toEqual([]);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("tells which live siblings use a router namespace's nftables table; an unreadable entry may use any", () => {
    alive.add(101).add(102).add(103).add(104).add(105);
    registerServer({ egress: { router: 'r1' } }, 101, dir);
    registerServer({ egress: { router: null } }, 102, dir);
    registerServer({}, 103, dir);
    registerServer({ egress: { router: 'r2' } }, 104, dir);
    writeFileSync(join(dir, '105'), ''); // an older version's entry
    const others = unregisterServer(isAlive, 104, dir);
    expect(others.filter((r) => usesTable(r, 'r2'))).toHaveLength(1);
    expect(others.filter((r) => usesTable(r, 'r1'))).toHaveLength(2);
    expect(others.filter((r) => usesTable(r, null))).toHaveLength(2);
  });
});
