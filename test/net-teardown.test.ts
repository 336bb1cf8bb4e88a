// Layer E, privileged, without a server: worker-pool/network.ts's setupNetwork() and
// teardownNetwork() called directly against a router namespace this suite creates (no
// upstream, no packet sent). What one sandbox's network leaves behind decides what the next
// sandbox given the same /31 pair inherits.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { networkSchema } from '../profiles/schema.js';
import { ensureTable, setupNetwork, teardownNetwork } from '../worker-pool/network/index.js';
import { netLeftovers, netnsOf } from './support/net-probes.js';
import { networkToolsMissing, UPSTREAM_IP } from './support/net-topology.js';
import { privilegedReason } from './support/server.js';
import { sh, trySh } from './support/shell.js';
import { pollUntil, token } from './support/wait.js';

const skipReason = privilegedReason() ?? networkToolsMissing();

describe.skipIf(skipReason !== null)(`layer E: one sandbox network at a time${skipReason ? ` [skipped: ${skipReason}]` : ''}`, () => {
  const router = `nettest-r-${token().slice(0, 6)}`;

  beforeAll(() => {
    sh('ip', ['netns', 'add', router]);
  });

  afterAll(() => {
    // Takes the router's veth ends and its inet zviz table with it.
    trySh('ip', ['netns', 'del', router]);
    expect(sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(router))).toEqual([]);
  });

  test('when teardownNetwork returns, the router-side veth is gone, so the freed /31 pair can be claimed at once', async () => {
    // `ip netns del` returns before the kernel has destroyed the namespace (that happens
    // asynchronously), so the peer zvs<index> may outlive teardown while its pair is free
    // again: the next sandbox given that pair fails with "RTNETLINK answers: File exists"
    // (a 503 SANDBOX_UNAVAILABLE in layer-e.test.ts's small-pool case).
    const lockDir = mkdtempSync(join(tmpdir(), 'nettest-locks-'));
    const host = { routerNetns: router, pool: '10.199.2.0/24', uplink: null, lockDir };
    const net = networkSchema.parse({ mode: 'egress', allow: [{ cidr: `${UPSTREAM_IP}/32`, ports: [8080] }] });
    const lingering: string[] = [];
    try {
      ensureTable(host);
      for (let i = 0; i < 20; i++) {
        const made = setupNetwork(host, `${process.pid}-nettest${i}`, net);
        teardownNetwork(host, made.info);
        const veth = `zvs${made.info!.index}`;
        if (trySh('ip', ['-n', router, 'link', 'show', veth]).status === 0) lingering.push(`#${i}: ${veth}`);
      }
    } finally {
      rmSync(lockDir, { recursive: true, force: true });
    }
    // The kernel finishes a moment later: nothing of these sandboxes may stay after that.
    const left = await pollUntil(() => netLeftovers(process.pid, router), (l) => l.length === 0, 3000, 100);
    expect(left, left.join('\n')).toEqual([]);
    expect(lingering, `still present right after teardownNetwork returned:\n${lingering.join('\n')}`).toEqual([]);
  });

  test("a /31 pair whose previous rules were never removed gets exactly the new profile's allowlist and none of the old drops", () => {
    // teardownNetwork ignores a failed nft removal ("the sweep at the next start removes
    // what is left") and releases the pair anyway, and the start-up sweep does the same; the
    // sweep goes by lock files, so nothing ever removes those rules. A removal fails, for
    // example, when a new version's removal names an object the old one never made (the
    // d6- set): seen while the tree was rebuilt between a SIGKILLed server and its successor.
    const lockDir = mkdtempSync(join(tmpdir(), 'nettest-locks-'));
    const host = { routerNetns: router, pool: '10.199.3.0/31', uplink: null, lockDir }; // one pair: index 0
    const first = networkSchema.parse({ mode: 'egress', allow: [{ cidr: '10.66.0.0/16', ports: [] }] });
    const second = networkSchema.parse({ mode: 'egress', allow: [{ cidr: `${UPSTREAM_IP}/32`, ports: [8080] }] });
    const nft = (...args: string[]) => trySh('ip', ['netns', 'exec', router, 'nft', ...args]);
    try {
      ensureTable(host);
      const a = setupNetwork(host, `${process.pid}-nettest-a`, first);
      const i = a.info!.index;
      // A drop recorded for the first sandbox, as its drop rule records one.
      expect(nft('add', 'element', 'inet', 'zviz', `d4-${i}`, '{ 10.66.0.9 . 443 }').status).toBe(0);
      // What teardownNetwork leaves when its nft removal fails: veth, namespace and lock go.
      sh('ip', ['-n', router, 'link', 'del', `zvs${i}`]);
      sh('ip', ['netns', 'del', a.info!.ns]);
      rmSync(join(lockDir, String(i)));

      const b = setupNetwork(host, `${process.pid}-nettest-b`, second);
      expect(b.info!.index).toBe(i);
      const chain = nft('list', 'chain', 'inet', 'zviz', `sb-${i}`).stdout;
      const drops = teardownNetwork(host, b.info);
      expect(chain).toContain(`ip daddr ${UPSTREAM_IP} tcp dport 8080 accept`);
      expect.soft(chain, `the second sandbox's chain:\n${chain}`).not.toContain('10.66.0.0/16');
      expect.soft(drops, "the second sandbox's audit").toEqual([]);
    } finally {
      // Whatever is left of index 0, one object at a time (some may be gone already).
      for (const args of [
        ['delete', 'element', 'inet', 'zviz', 'sandboxes', '{ "zvs0" }'],
        ['delete', 'element', 'inet', 'zviz', 'sandboxes_in', '{ "zvs0" }'],
        ['flush', 'chain', 'inet', 'zviz', 'sb-0'],
        ['delete', 'chain', 'inet', 'zviz', 'sb-0'],
        ['flush', 'chain', 'inet', 'zviz', 'sbd-0'],
        ['delete', 'chain', 'inet', 'zviz', 'sbd-0'],
        ['delete', 'set', 'inet', 'zviz', 'd4-0'],
        ['delete', 'set', 'inet', 'zviz', 'da-0'],
        ['delete', 'set', 'inet', 'zviz', 'd6-0'],
      ]) {
        nft(...args);
      }
      trySh('ip', ['-n', router, 'link', 'del', 'zvs0']);
      for (const ns of netnsOf(process.pid)) trySh('ip', ['netns', 'del', ns]);
      rmSync(lockDir, { recursive: true, force: true });
    }
  });
});
