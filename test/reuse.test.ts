// Privileged: reusable execution environments of deployed functions (`reuse` in the
// manifest), end to end on a real server with real sandboxes: what persists between two
// invocations and what never does, the reset between them, every discard, the per
// invocation accounting, quotas, and what a killed server leaves.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { brokerStormPython, trustedBudgetMs } from './support/broker-storm.js';
import { hostLeftovers, settledLeftovers } from './support/leftovers.js';
import { privilegedReason, type Reply, type RunningServer, startServer } from './support/server.js';
import { syscallTableUnavailable, x86_64Syscalls } from './support/syscall-table.js';
import { pollUntil, scaledMs, sleep, timeScale } from './support/wait.js';

// One handler for most cases: what it does depends on the event.
const NODE = `
const fs = require('node:fs');
let count = 0;
module.exports = async (event) => {
  const start = Date.now();
  count++;
  const seen = { tmp: fs.readdirSync('/tmp').sort(), shm: fs.readdirSync('/dev/shm').sort() };
  // How long before this invocation each /tmp entry was last written (ms).
  const tmpAgeMs = seen.tmp.map((n) => { try { return start - fs.lstatSync('/tmp/' + n).mtimeMs; } catch { return null; } });
  if (event.write) {
    fs.writeFileSync('/tmp/a.txt', 'x');
    fs.mkdirSync('/tmp/d/e', { recursive: true });
    fs.writeFileSync('/tmp/d/e/f', 'y');
    fs.symlinkSync('/fn', '/tmp/link');
    fs.writeFileSync('/dev/shm/s', 'z');
  }
  if (event.background) require('node:child_process').spawn('/usr/bin/sleep', ['30'], { detached: true, stdio: 'ignore' }).unref();
  // UDP: Landlock keeps TCP bind to the profile's ports, and a bound UDP socket listens too.
  if (event.listen) await new Promise((r) => require('node:dgram').createSocket('udp4').bind(7000, '127.0.0.1', r));
  if (event.hang) await new Promise(() => setInterval(() => {}, 1000));
  if (event.oom) { const keep = []; for (;;) keep.push(Buffer.alloc(1 << 20, 1)); }
  if (event.crash) process.exit(3);
  if (event.throw) throw new Error('asked to throw');
  if (event.garbage) {
    const body = Buffer.from('this is not JSON');
    const head = Buffer.alloc(4);
    head.writeUInt32LE(body.length, 0);
    fs.writeSync(4, Buffer.concat([head, body]));
  }
  if (event.burnMs) { const t0 = process.cpuUsage(); for (;;) { const u = process.cpuUsage(t0); if (u.user + u.system >= event.burnMs * 1000) break; } }
  if (event.sleepMs) await new Promise((r) => setTimeout(r, event.sleepMs));
  if (event.burner) await startWorker(BURNER);
  if (event.litter) await startWorker(LITTER);
  return { count, seen, tmpAgeMs, ranMs: shared ? Atomics.load(shared, 0) : 0 };
};
// A thread that keeps running once the answer is in. shared[0]: the ms it has run (gaps over
// 50 ms are time it was stopped, not run). LITTER writes /tmp files and forks until it
// notices it was stopped (a gap of over 300 ms): what /tmp holds when the next invocation
// starts was written before the reset, which must have removed it.
let shared = null;
async function startWorker(body) {
  shared = new Int32Array(new SharedArrayBuffer(4));
  new (require('node:worker_threads').Worker)(body, { eval: true, workerData: shared }).unref();
  while (Atomics.load(shared, 0) < 20) await new Promise((r) => setTimeout(r, 5));
}
const LITTER = \`
const s = require('node:worker_threads').workerData;
const fs = require('node:fs');
let last = Date.now();
for (let i = 0; Date.now() - last < 300; i++) {
  last = Date.now();
  try { fs.writeFileSync('/tmp/g' + i, String(Date.now())); } catch {}
  Atomics.add(s, 0, 1);
  if (i % 50 === 0) require('node:child_process').spawnSync('/usr/bin/true');
}
\`;
const BURNER = \`
const s = require('node:worker_threads').workerData;
let last = Date.now();
for (;;) { const now = Date.now(); if (now - last < 50) Atomics.add(s, 0, now - last); last = now; }
\`;
`;

const PYTHON = `
import os
count = 0
def handler(event, context):
    global count
    count += 1
    seen = sorted(os.listdir('/tmp'))
    if event.get('write'):
        open('/tmp/p.txt', 'w').write('x')
    return {"count": count, "seen": {"tmp": seen}}
`;

const REUSE = { maxInvocations: 1000, idleMs: 60_000, reset: 'tmp' };

describe.skipIf(privilegedReason() !== null)('reusable environments on a real server', () => {
  let s: RunningServer;
  let otherKey: string;
  let before: string[] = [];

  async function deploy(name: string, body: Record<string, unknown>, auth: 'tenant' | { bearer: string } = 'tenant'): Promise<Reply> {
    const r = await s.request(`/functions/${name}`, { method: 'PUT', body: { runtime: 'node', code: NODE, reuse: REUSE, ...body }, auth });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r;
  }
  const call = (name: string, input: unknown = {}, auth: 'tenant' | { bearer: string } = 'tenant'): Promise<Reply> =>
    s.request('/invoke', { method: 'POST', body: { function: name, input }, auth });
  async function ok(name: string, input: unknown = {}, auth: 'tenant' | { bearer: string } = 'tenant'): Promise<any> {
    const r = await call(name, input, auth);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.status, JSON.stringify(r.body)).toBe('ok');
    return r.body;
  }
  /** The audit file's record of a discard (it is written as the discard happens, asynchronously). */
  const discarded = async (fn: string, reason: string, invocations?: number): Promise<boolean> =>
    (await pollUntil(
      async () => discards().some((d) => d.function === fn && d.reason === reason && (invocations === undefined || d.invocations === invocations)),
      (found) => found,
      5000,
      50,
    )) === true;
  const discards = (): any[] =>
    readFileSync(join(s.stateDir, 'audit.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"environment"'))
      .map((l) => JSON.parse(l));

  beforeAll(async () => {
    before = hostLeftovers();
    s = await startServer({ env: { ZVIZ_WARM_IDLE_MS: '1500' } });
    const other = await s.request('/admin/tenants', { method: 'POST', auth: 'admin', body: { name: 'other' } });
    expect(other.status).toBe(201);
    otherKey = other.body.apiKey;
  });
  afterAll(async () => {
    if (s) expect(await s.stop()).toBe(0);
    const left = await settledLeftovers(s ? [s.pid] : [], before);
    expect(left, left.join('\n')).toEqual([]);
  });

  it('keeps a node function\'s globals between two invocations, says reused and the index', async () => {
    await deploy('globals', {});
    const a = await ok('globals');
    const b = await ok('globals');
    expect(a.output.count).toBe(1);
    expect(b.output.count).toBe(2);
    expect(a).toMatchObject({ reused: false, invocationIndex: 1 });
    expect(b).toMatchObject({ reused: true, invocationIndex: 2, warm: true, setupMs: 0 });
    expect(['invocation', 'environment']).toContain(b.memoryPeakScope);
  });

  it('keeps a python function\'s globals too', async () => {
    const r = await s.request('/functions/py', { method: 'PUT', body: { runtime: 'python', code: PYTHON, reuse: REUSE } });
    expect(r.status).toBe(201);
    expect((await ok('py')).output.count).toBe(1);
    const b = await ok('py', { write: true });
    expect(b.output.count).toBe(2);
    expect(b).toMatchObject({ reused: true, invocationIndex: 2 });
    // The reset emptied /tmp after the write.
    const c = await ok('py');
    expect(c.output).toMatchObject({ count: 3, seen: { tmp: [] } });
  });

  it("lists each invocation's own seccomp decisions, not the environment's so far", async () => {
    const code = 'import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\ndef handler(event, context):\n    for _ in range(2):\n        libc.syscall(16, 0, 0x5412, 0)  # ioctl TIOCSTI: refused with EPERM\n    return 1\n';
    expect((await s.request('/functions/deny', { method: 'PUT', body: { runtime: 'python', code, reuse: REUSE } })).status).toBe(201);
    for (let i = 1; i <= 2; i++) {
      const r = await ok('deny');
      expect(r.invocationIndex).toBe(i);
      expect(r.audit.filter((a: any) => a.kind === 'seccomp' && a.syscall === 'ioctl')).toEqual([
        { kind: 'seccomp', syscall: 'ioctl', nr: 16, action: 'errno', count: 2 },
      ]);
    }
  });

  it('never serves another version, function or tenant', async () => {
    await deploy('iso', {});
    await ok('iso');
    expect((await ok('iso')).output.count).toBe(2);
    await deploy('iso2', {});
    expect((await ok('iso2')).output.count).toBe(1);
    await deploy('iso', { env: { V: '2' } });
    const v2 = await ok('iso');
    expect(v2).toMatchObject({ version: 2, invocationIndex: 1 });
    expect(v2.output.count).toBe(1);
    const auth = { bearer: otherKey };
    await deploy('iso', {}, auth);
    expect((await ok('iso', {}, auth)).output.count).toBe(1);
  });

  it('empties /tmp and /dev/shm before each invocation with reset "tmp", keeps them with "none"', async () => {
    await deploy('tmp', {});
    await ok('tmp', { write: true });
    // Written in invocation 1, gone when invocation 2 starts in the same environment.
    const b = await ok('tmp');
    expect(b).toMatchObject({ reused: true, invocationIndex: 2, output: { seen: { tmp: [], shm: [] } } });
    await deploy('keep', { reuse: { ...REUSE, reset: 'none' } });
    await ok('keep', { write: true });
    const c = await ok('keep');
    expect(c).toMatchObject({ reused: true });
    expect(c.output.seen.tmp).toEqual(['a.txt', 'd', 'link']);
  });

  it('discards an environment left with a background process or a listening socket', async () => {
    await deploy('bg', {});
    const a = await ok('bg', { background: true });
    const b = await ok('bg');
    expect(b).toMatchObject({ invocationIndex: 1, reused: false });
    expect(a.output.count).toBe(1);
    expect(b.output.count).toBe(1);
    await deploy('listen', {});
    await ok('listen', { listen: true });
    expect(await ok('listen')).toMatchObject({ invocationIndex: 1 });
    expect(await discarded('bg', 'process')).toBe(true);
    expect(await discarded('listen', 'socket')).toBe(true);
  });

  it.each([
    ['a timeout', { hang: true }, 'timeout'],
    ['an OOM kill', { oom: true }, 'oom'],
    ['a crash', { crash: true }, 'error'],
    ['a thrown error', { throw: true }, 'error'],
    ['a non-JSON answer', { garbage: true }, 'error'],
  ])('discards after %s', async (_what, input, status) => {
    const name = `bad-${status}-${Object.keys(input)[0]}`;
    await deploy(name, { limits: { timeoutMs: Math.round(2000 * timeScale()), memoryMb: 64 } });
    await ok(name);
    const r = await call(name, input);
    expect(r.status).toBe(200);
    expect(r.body.status, JSON.stringify(r.body)).toBe(status);
    expect(r.body.invocationIndex).toBe(2);
    const next = await ok(name);
    expect(next).toMatchObject({ invocationIndex: 1, output: { count: 1 } });
    expect((await discarded(name, 'status')) || (await discarded(name, 'reset'))).toBe(true);
  });

  it('discards on redeploy and on delete', async () => {
    await deploy('redeploy', {});
    await ok('redeploy');
    await ok('redeploy');
    await deploy('redeploy', {});
    expect(await discarded('redeploy', 'redeployed', 2)).toBe(true);
    await ok('redeploy');
    expect((await s.request('/functions/redeploy', { method: 'DELETE' })).status).toBe(204);
    expect(await discarded('redeploy', 'deleted')).toBe(true);
  });

  it('honours maxInvocations and idleMs', async () => {
    await deploy('max', { reuse: { ...REUSE, maxInvocations: 2 } });
    const idx = [];
    for (let i = 0; i < 5; i++) idx.push((await ok('max')).invocationIndex);
    expect(idx).toEqual([1, 2, 1, 2, 1]);
    await deploy('idle', { reuse: { ...REUSE, idleMs: 1000 } });
    await ok('idle');
    expect((await ok('idle')).invocationIndex).toBe(2);
    await sleep(2000);
    expect((await ok('idle')).invocationIndex).toBe(1);
    expect(await discarded('max', 'max-invocations', 2)).toBe(true);
    expect(await discarded('idle', 'idle', 2)).toBe(true);
  });

  it("charges an invocation's own CPU only, not the previous ones'", async () => {
    await deploy('cpu', {});
    const burn = await ok('cpu', { burnMs: 300 });
    const idle = await ok('cpu');
    expect(idle.invocationIndex).toBe(2);
    expect(burn.cpuMs).toBeGreaterThanOrEqual(300);
    expect(idle.cpuMs).toBeLessThan(burn.cpuMs / 2);
  });

  it("charges an environment's boot to its first invocation, once: the module load's CPU and the supervisor's", async () => {
    // The function's module burns 1 s of CPU and makes the supervisor answer 20000 denied
    // calls (ptrace: a notification each) before its handler exists. Reused once, an
    // environment whose boot went unbilled would run all of it for free.
    const code = [
      'import ctypes, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      't0 = time.process_time()',
      'while time.process_time() - t0 < 1.0:',
      '    pass',
      'BURN_MS = (time.process_time() - t0) * 1000',
      'for _ in range(20000):',
      '    libc.syscall(101, -1, 1, 1, 0)',
      'def handler(event, context):',
      '    return {"burnMs": BURN_MS}',
      '',
    ].join('\n');
    const limits = { timeoutMs: scaledMs(20_000, 60_000) };
    for (const maxInvocations of [1, 3]) {
      const name = `boot${maxInvocations}`;
      const put = await s.request(`/functions/${name}`, { method: 'PUT', body: { runtime: 'python', code, limits, reuse: { ...REUSE, maxInvocations } } });
      expect(put.status, JSON.stringify(put.body)).toBe(201);
      const a = await ok(name);
      const b = await ok(name);
      const what = JSON.stringify({ a: { ...a, audit: undefined }, b: { ...b, audit: undefined } });
      console.log(`boot, maxInvocations ${maxInvocations}: burnt ${a.output.burnMs} ms at load; charged cpuMs ${a.cpuMs} + brokerCpuMs ${a.brokerCpuMs}, then ${b.cpuMs} + ${b.brokerCpuMs} (index ${b.invocationIndex})`);
      expect(a.invocationIndex, what).toBe(1);
      // At least half of what the module measured burning: charged, not a wall-clock figure.
      expect(a.output.burnMs, what).toBeGreaterThanOrEqual(1000);
      expect(a.cpuMs, what).toBeGreaterThanOrEqual(a.output.burnMs / 2);
      expect(a.chargedCpuMs, what).toBeGreaterThanOrEqual(a.cpuMs + a.brokerCpuMs - 0.2);
      // 20000 notifications cost the supervisor well over 1 µs of CPU each.
      expect(a.brokerCpuMs, what).toBeGreaterThanOrEqual(20);
      if (maxInvocations === 1) {
        // A fresh environment each time: each first invocation pays its own boot.
        expect(b.invocationIndex, what).toBe(1);
        expect(b.cpuMs, what).toBeGreaterThanOrEqual(b.output.burnMs / 2);
        expect(b.brokerCpuMs, what).toBeGreaterThanOrEqual(20);
      } else {
        // The same environment: its second invocation is not charged the boot again.
        expect(b.invocationIndex, what).toBe(2);
        expect(b.cpuMs, what).toBeLessThan(a.output.burnMs / 4);
        expect(b.brokerCpuMs, what).toBeLessThan(a.brokerCpuMs / 4);
      }
    }
  }, scaledMs(120_000, 600_000));

  it('answers a boot that passes timeoutMs as its invocation\'s timeout, charged, not as an unbilled 503', async () => {
    // The module burns 300 ms of CPU, says so on stderr, and never finishes loading.
    const code = [
      'import sys, time',
      't0 = time.process_time()',
      'while time.process_time() - t0 < 0.3:',
      '    pass',
      'sys.stderr.write("burnt %d\\n" % ((time.process_time() - t0) * 1000))',
      'sys.stderr.flush()',
      'time.sleep(3600)',
      'def handler(event, context):',
      '    return 1',
      '',
    ].join('\n');
    const limits = { timeoutMs: scaledMs(3000, 60_000) };
    for (const reuse of [REUSE, 'never']) {
      const name = `hang-${typeof reuse === 'string' ? reuse : 'reuse'}`;
      const put = await s.request(`/functions/${name}`, { method: 'PUT', body: { runtime: 'python', code, limits, reuse } });
      expect(put.status, JSON.stringify(put.body)).toBe(201);
      const r = await call(name);
      const what = JSON.stringify({ ...r.body, audit: undefined });
      expect(r.status, what).toBe(200);
      expect(r.body.status, what).toBe('timeout');
      const burnt = /burnt (\d+)/.exec(r.body.stderr)?.[1];
      expect(burnt, what).toBeDefined();
      expect(r.body.cpuMs, what).toBeGreaterThanOrEqual(Number(burnt) / 2);
    }
  }, scaledMs(60_000, 600_000));

  it.skipIf(syscallTableUnavailable() !== null)(
    "bounds a boot by the trusted CPU budget: a storm of denied calls at load is its first invocation's broker-cpu kill, charged (x86_64)",
    async () => {
      const timeoutMs = 8000;
      const cpus = 0.5;
      const budgetMs = trustedBudgetMs(timeoutMs, cpus);
      const code = `${brokerStormPython(x86_64Syscalls().get('ptrace')!)}\ndef handler(event, context):\n    return 1\n`;
      const put = await s.request('/functions/bootstorm', { method: 'PUT', body: { runtime: 'python', code, limits: { timeoutMs, cpus }, reuse: { ...REUSE, maxInvocations: 1 } } });
      expect(put.status, JSON.stringify(put.body)).toBe(201);
      const r = await call('bootstorm');
      const what = JSON.stringify({ ...r.body, audit: undefined });
      console.log(`boot storm: cpuMs=${r.body.cpuMs} brokerCpuMs=${r.body.brokerCpuMs} budget=${budgetMs} status=${r.body.status}/${r.body.reason}`);
      expect(r.status, what).toBe(200);
      // Ended by the budget while loading, not by the boot's timeout (before, the boot ran its
      // whole timeoutMs with the supervisor answering, and was a 503 charged nothing).
      expect(r.body, what).toMatchObject({ status: 'killed', reason: 'broker-cpu', invocationIndex: 1 });
      // Past the budget by at most one 50 ms check of one busy supervisor (as in layer-b).
      expect(r.body.brokerCpuMs, what).toBeGreaterThan(budgetMs);
      expect(r.body.brokerCpuMs, what).toBeLessThan(budgetMs + 150);
      expect(r.body.chargedCpuMs, what).toBeGreaterThanOrEqual(r.body.brokerCpuMs);
    },
    scaledMs(60_000, 600_000),
  );

  it('stops the runtime while parked: a thread still running after the answer burns nothing', async () => {
    await deploy('burner', {});
    const a = await ok('burner', { burner: true });
    const parkedMs = Math.round(1500 * timeScale());
    await sleep(parkedMs);
    const b = await ok('burner');
    expect(b).toMatchObject({ reused: true, invocationIndex: 2 });
    // Running, the thread would have counted about parkedMs more; stopped, nearly nothing.
    expect(b.output.ranMs - a.output.ranMs).toBeLessThan(parkedMs / 2);
    expect(b.cpuMs).toBeLessThan(parkedMs / 2);
  });

  it('never lets a thread that forks and writes /tmp after the answer leak into the next invocation', async () => {
    await deploy('litter', {});
    for (let i = 0; i < 4; i++) {
      await ok('litter', { litter: true });
      await sleep(Math.round(1000 * timeScale()));
      const b = await ok('litter');
      if (!b.reused) continue; // discarded (a fork was caught in flight): as good
      // The reset left /tmp empty. The thread, stopped while parked, resumes at GO and may
      // finish the one write it was in (then sees the gap and stops): at most one file,
      // written now, never one from before the parked second.
      expect(b.output.seen.tmp.length, JSON.stringify(b.output)).toBeLessThanOrEqual(1);
      for (const age of b.output.tmpAgeMs) expect(age, JSON.stringify(b.output)).toBeLessThan(Math.round(500 * timeScale()));
    }
  });

  it('never reuses inline code', async () => {
    const r = await s.invoke({ runtime: 'node', code: 'console.log(1)' });
    expect(r.status).toBe('ok');
    expect(r.reused).toBeUndefined();
    expect(r.invocationIndex).toBeUndefined();
  });

  it('refuses reuse for bash and image functions', async () => {
    const r = await s.request('/functions/sh', { method: 'PUT', body: { runtime: 'bash', code: 'echo 1', reuse: REUSE } });
    expect(r.status).toBe(400);
    expect(JSON.stringify(r.body)).toContain('reuse');
  });

  it('refuses a tenant over its concurrency quota while its environments sit idle', async () => {
    const t = await s.request('/admin/tenants', { method: 'POST', auth: 'admin', body: { name: 'conc', quotas: { concurrency: 1 } } });
    expect(t.status).toBe(201);
    const auth = { bearer: t.body.apiKey as string };
    await deploy('conc', {}, auth);
    await ok('conc', {}, auth);
    await ok('conc', {}, auth); // an idle environment holds no slot
    const slow = call('conc', { sleepMs: Math.round(1500 * timeScale()) }, auth);
    await sleep(300);
    const refused = await call('conc', {}, auth);
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('QUOTA_CONCURRENCY');
    expect((await slow).body.status).toBe('ok');
  });
});

describe.skipIf(privilegedReason() !== null)('reusable environments of a server killed with SIGKILL', () => {
  it('leave nothing once the host starts again', async () => {
    const before = hostLeftovers();
    const stateDir = mkdtempSync(join(tmpdir(), 'zviz-host-'));
    let second: RunningServer | null = null;
    try {
      const first = await startServer({ stateDir });
      const d = await first.request('/functions/kept', { method: 'PUT', body: { runtime: 'node', code: NODE, reuse: REUSE } });
      expect(d.status).toBe(201);
      for (let i = 0; i < 2; i++) expect((await first.invoke({ function: 'kept', input: {} })).status).toBe('ok');
      await first.stop('SIGKILL');
      // The restart sweeps what the killed server's environments left; its own shutdown
      // then removes what is shared, so nothing at all is left.
      second = await startServer({ stateDir, tenant: { name: 'second' } });
      expect(await second.stop()).toBe(0);
      second = null;
      const left = await settledLeftovers([], before);
      expect(left, left.join('\n')).toEqual([]);
    } finally {
      await second?.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
