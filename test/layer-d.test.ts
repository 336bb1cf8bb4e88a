// Layer D, privileged: every invocation runs in its own cgroup(s) beneath the server's,
// with memory, pids and CPU limits the kernel enforces, exact accounting, and nothing
// left on the host afterwards. Talks to a real server on 127.0.0.1 and reads the host's
// cgroup file systems and /proc directly.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CGROUP_PARENT, sandboxCgroupPrefix, SERVER_LEAF } from '../worker-pool/host/names.js';
import { CGROUP_ROOT, deadPid, findDirs, hostCgroupDriver, MiB, sampleMemAvailable } from './support/cgroups.js';
import { describeWhere } from './support/applies.js';
import { belongsToOthers, hostLeftovers } from './support/leftovers.js';
import { procCgroups, readTrim } from './support/procfs.js';
import { newSandboxProcesses, sandboxProcesses } from './support/sandboxes.js';
import { startServerProcess } from './support/server-process.js';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';
import { pollUntil, scaledMs, sleep, timeScale } from './support/wait.js';

const skipReason = privilegedReason();
const driver = hostCgroupDriver();
/** What teardown of a sandbox may add to its timeout: kill, reap, rmdir, response. */
const SLACK_MS = 3000;

const PY_FORK_LOOP = `
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print(f"fork {n + 1} failed: {type(e).__name__} errno={e.errno}", flush=True)
`;
const PY_MEMORY_BOMB = `
chunks = []
for _ in range(205):
    chunks.append(b"\\x01" * (10 * 1024 * 1024))
print("allocated", len(chunks) * 10, "MiB")
`;
const pyBurn = (threads: number, seconds: number): string => `
import threading, time
end = time.time() + ${seconds}
def burn():
    while time.time() < end:
        pass
ts = [threading.Thread(target=burn) for _ in range(${threads})]
for t in ts: t.start()
for t in ts: t.join()
print("done", round(time.process_time() * 1000))
`;

/**
 * The quota caps what a burn gets (about 1000 ms in 2 s at cpus 0.5; without it the
 * GIL-bound threads fill a core: about 2000 ms), and what is charged is at least what the
 * function itself counted. A host busy with other work gives the sandbox less than its
 * quota, which neither bound mistakes for a fault.
 */
function expectBurnCharged(r: { status: string; stdout: string; cpuMs: number; durationMs?: number }): void {
  expect(r.status).toBe('ok');
  const own = Number(/^done (\d+)$/m.exec(r.stdout)?.[1]);
  expect(own, r.stdout).toBeGreaterThan(0);
  expect(r.cpuMs).toBeGreaterThanOrEqual(own * 0.95);
  // Half of the function's wall time, start-up included: on a slow (emulated) machine the
  // interpreter's start alone takes a second or more, under the same quota.
  expect(r.cpuMs).toBeLessThanOrEqual(Math.max(1300, 0.65 * (r.durationMs ?? 0)));
}

/** GET /host (admin-only) or /healthz (open). */
async function getJson(s: RunningServer, path: '/host' | '/healthz'): Promise<{ status: number; body: any }> {
  return s.request(path, { auth: path === '/host' ? 'admin' : false });
}

/**
 * Nothing of ZViz left on the host by `mine` (a folder may take a moment to go). Other test
 * runs may share the host: what a live sibling server owns is not ours to judge.
 */
async function expectNoLeftovers(mine: number[]): Promise<void> {
  const ours = (): string[] => hostLeftovers().filter((e) => !belongsToOthers(e, mine));
  const left = await pollUntil(ours, (l) => l.length === 0, 3000, 100);
  expect(left, left.join('\n')).toEqual([]);
}

/** A server without warm pools for the describe block (`use` receives it); afterwards nothing of it may be left. */
function coldServerForSuite(use: (s: RunningServer) => void): void {
  let s: RunningServer | undefined;
  beforeAll(async () => {
    s = await startServer({ env: { ZVIZ_WARM_MAX: '0' } });
    use(s);
  });
  afterAll(async () => {
    await s?.stop();
    await expectNoLeftovers(s ? [s.pid] : []);
  });
}

/** The sandbox cgroup folders of `s` in one v1 hierarchy (or the v2 mount). */
function sandboxDirs(s: RunningServer, hierarchy: string): string[] {
  return findDirs(join(CGROUP_ROOT, hierarchy), sandboxCgroupPrefix(s.pid));
}

describeWhere(
  driver !== 'v1' ? `this host's cgroup driver is ${driver}, not v1` : null,
  'layer D on cgroup v1',
  () => {
    let s!: RunningServer;
    coldServerForSuite((started) => (s = started));

    test('a bash fork bomb under pids 32 ends, other requests answer meanwhile, and no process is left', async () => {
      const before = sandboxProcesses(s.pid);
      const timeoutMs = 5000;
      const started = Date.now();
      let bombDone = false;
      const bomb = s.invoke({
        runtime: 'bash',
        code: ':(){ :|:& };:\nsleep 2; echo survived',
        limits: { pids: 32, timeoutMs },
      });
      bomb.finally(() => (bombDone = true)).catch(() => undefined); // awaited below
      await sleep(300);
      const [other, health] = await Promise.all([
        s.invoke({ runtime: 'python', code: 'print("still here")' }),
        getJson(s, '/healthz'),
      ]);
      expect({ status: other.status, stdout: other.stdout }).toEqual({ status: 'ok', stdout: 'still here\n' });
      expect(health.status).toBe(200);
      expect(bombDone, 'the bomb was still running when the other invocation answered').toBe(false);
      const r = await bomb;
      console.log(`fork bomb: status=${r.status} reason=${r.reason} durationMs=${r.durationMs} stdout=${r.stdout.trim()}`);
      expect(['ok', 'error', 'timeout']).toContain(r.status);
      expect(Date.now() - started).toBeLessThan(timeoutMs + SLACK_MS);
      expect(await newSandboxProcesses(s.pid, before)).toEqual([]);
    });

    test('a python fork loop under pids 16 sees EAGAIN and leaves no process', async () => {
      const before = sandboxProcesses(s.pid);
      const r = await s.invoke({ runtime: 'python', code: PY_FORK_LOOP, limits: { pids: 16, timeoutMs: 5000 } });
      expect(r.stdout).toMatch(/BlockingIOError errno=11/);
      // The failing fork is at most the 16th task of the cgroup (the sandbox's own init counts too).
      const failedAt = Number(/^fork (\d+) failed/.exec(r.stdout)?.[1]);
      expect(failedAt).toBeGreaterThanOrEqual(8);
      expect(failedAt).toBeLessThanOrEqual(16);
      expect(await newSandboxProcesses(s.pid, before)).toEqual([]);
    });

    test("allocating 2 GiB under memoryMb 64 returns 'oom' and the host's available memory stays within 512 MiB", async () => {
      const sampler = sampleMemAvailable(50);
      const r = await s.invoke({ runtime: 'python', code: PY_MEMORY_BOMB, limits: { memoryMb: 64, timeoutMs: 10_000 } });
      const mem = sampler.stop();
      const drop = ((mem.baseline - mem.min) / MiB).toFixed(1);
      console.log(`memory bomb: status=${r.status} oomKills=${r.oomKills} peak=${r.memoryPeakBytes} host drop=${drop} MiB`);
      expect({ status: r.status, reason: r.reason }).toEqual({ status: 'oom', reason: 'memory' });
      expect(r.oomKills).toBeGreaterThanOrEqual(1);
      expect(r.memoryPeakBytes).toBeLessThanOrEqual(64 * MiB);
      expect(mem.min).toBeGreaterThan(mem.baseline - 512 * MiB);
    });

    test.each([
      ['/tmp', 'tmpSizeMb 64'],
      ['/dev/shm', 'shmSizeMb 16'],
    ])('filling %s (%s) under memoryMb 64 ends in oom or a failed write, with at most 64 MiB charged', async (dir) => {
      const r = await s.invoke({
        runtime: 'bash',
        profile: 'default',
        code: `head -c 200M /dev/zero > ${dir}/f; echo "rc=$?"`,
        limits: { memoryMb: 64 },
      });
      console.log(`fill ${dir}: status=${r.status} peak=${r.memoryPeakBytes} ${r.stdout.trim()} ${r.stderr.trim()}`);
      const failedWrite =
        r.status === 'ok' && /rc=[1-9]/.test(r.stdout) && /No space left on device|File too large/.test(r.stderr);
      expect(r.status === 'oom' || failedWrite, JSON.stringify({ ...r, audit: undefined })).toBe(true);
      expect(r.memoryPeakBytes).toBeLessThanOrEqual(64 * MiB + 8 * MiB);
    });

    test('four busy threads for 2 s under cpus 0.5 are charged what they used, at most about half their wall time (1000 ms of 2 s)', async () => {
      const r = await s.invoke({ runtime: 'python', code: pyBurn(4, 2), limits: { cpus: 0.5, timeoutMs: 10_000 } });
      console.log(`cpu burn: cpuMs=${r.cpuMs} durationMs=${r.durationMs} ${r.stdout.trim()}`);
      expectBurnCharged(r);
    });

    test('memoryPeakBytes counts 100 MiB that the function allocated and touched', async () => {
      const r = await s.invoke({
        runtime: 'python',
        code: 'b = bytearray(100 * 1024 * 1024)\nb[::4096] = b"x" * len(b[::4096])\nprint(len(b))',
        limits: { memoryMb: 256 },
      });
      console.log(`100 MiB: memoryPeakBytes=${r.memoryPeakBytes} (${(r.memoryPeakBytes / MiB).toFixed(1)} MiB)`);
      expect(r.status).toBe('ok');
      expect(r.memoryPeakBytes).toBeGreaterThanOrEqual(100 * MiB);
      expect(r.memoryPeakBytes).toBeLessThanOrEqual(256 * MiB);
    });

    test('cpuMs counts a busy loop that uses 300 ms of CPU', async () => {
      // Bounded by its own CPU time, not the wall clock: other load on the host cannot shrink it.
      const code = 'import time\nwhile time.process_time() < 0.3:\n    pass\nprint("done")';
      const r = await s.invoke({ runtime: 'python', code, limits: { cpus: 1 } });
      expect(r.status).toBe('ok');
      expect(r.cpuMs).toBeGreaterThanOrEqual(200);
      expect(r.cpuMs).toBeLessThanOrEqual(2000);
    });

    test('cpuMs counts the whole process tree: three background subprocesses burning 0.5 s of CPU each', async () => {
      const burner = `python3 -c 'import time\nwhile time.process_time() < 0.5: pass'`;
      const r = await s.invoke({
        runtime: 'bash',
        code: `for i in 1 2 3; do ${burner} & done\nwait\necho done`,
        limits: { cpus: 2, timeoutMs: 10_000 },
      });
      expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 'ok', stdout: 'done\n' });
      expect(r.cpuMs).toBeGreaterThanOrEqual(1000);
    });

    test("a timeout kills the whole cgroup, including a setsid'd busy loop and a background sleep", async () => {
      const before = sandboxProcesses(s.pid);
      const started = Date.now();
      const r = await s.invoke({
        runtime: 'bash',
        code: "setsid bash -c 'while :; do :; done' &\nsleep 100 &\nwait",
        limits: { timeoutMs: 800 },
      });
      expect({ status: r.status, reason: r.reason }).toEqual({ status: 'timeout', reason: 'timeout' });
      expect(Date.now() - started).toBeLessThan(800 + SLACK_MS);
      expect(await newSandboxProcesses(s.pid, before)).toEqual([]);
    });

    test("a running invocation's cgroups carry its limits beneath the server's cgroup and go when it ends", async () => {
      const limits = { memoryMb: 96, pids: 21, cpus: 0.7, timeoutMs: 10_000 };
      const hierarchies: string[] = (await getJson(s, '/host')).body.cgroup.controllers;
      const running = s.invoke({ runtime: 'python', code: 'import time\ntime.sleep(1.5)\nprint("slept")', limits });
      running.catch(() => undefined); // awaited below; a rejection must not be reported as unhandled first
      // The supervisor creates the folders one hierarchy after another: wait for all of them.
      const snapshot = (): Record<string, string[]> => Object.fromEntries(hierarchies.map((h) => [h, sandboxDirs(s, h)]));
      const seen = await pollUntil(snapshot, (all) => Object.values(all).every((d) => d.length > 0), 1400, 10);
      const mem = seen['memory'] ?? [];
      // Read while it runs: the folders are gone once it ends.
      const read = (h: string, file: string): string | null => readTrim(join(seen[h]?.[0] ?? '/nonexistent', file));
      const captured = {
        memory: read('memory', 'memory.limit_in_bytes'),
        memsw: existsSync(join(mem[0] ?? '/nonexistent', 'memory.memsw.limit_in_bytes'))
          ? read('memory', 'memory.memsw.limit_in_bytes')
          : String(96 * MiB),
        pidsMax: read('pids', 'pids.max'),
        quota: read('cpu', 'cpu.cfs_quota_us'),
        period: read('cpu', 'cpu.cfs_period_us'),
      };
      const r = await running;
      expect(r.stdout).toBe('slept\n');
      expect(mem).toHaveLength(1);
      const name = basename(mem[0]!);
      const own = procCgroups(s.pid);
      for (const [h, dirs] of Object.entries(seen)) {
        // Beneath the server's own cgroup in that hierarchy, in a `zviz` folder: never at the root.
        const serverCg = own.get(h);
        expect(serverCg, `server's ${h} cgroup`).toBeDefined();
        expect(dirs, h).toEqual([join(CGROUP_ROOT, h, serverCg!, 'zviz', name)]);
      }
      expect(captured).toEqual({
        memory: String(96 * MiB),
        memsw: String(96 * MiB),
        pidsMax: '21',
        quota: '70000',
        period: '100000',
      });
      // The answer comes before teardown (the supervisor removes its cgroups on its own time after RESULT):
      // wait a bounded while for them to go.
      const all = Object.values(seen).flat();
      const left = await pollUntil(() => all.filter((d) => existsSync(d)), (l) => l.length === 0, scaledMs(3000), 20);
      expect(left).toEqual([]);
    });

    test("the sandbox's memory cgroup is in a zviz folder beneath the server's own memory cgroup, not the root", async () => {
      const running = s.invoke({ runtime: 'bash', code: 'sleep 1' });
      running.catch(() => undefined); // awaited below
      const dirs = await pollUntil(() => sandboxDirs(s, 'memory'), (d) => d.length > 0, 900, 10);
      await running;
      const serverMem = procCgroups(s.pid).get('memory')!;
      const parent = join(CGROUP_ROOT, 'memory', serverMem, 'zviz');
      expect(dirs).toHaveLength(1);
      expect(dirs[0]!.startsWith(parent + '/')).toBe(true);
      expect(dirname(dirs[0]!)).not.toBe(join(CGROUP_ROOT, 'memory'));
      const host = await getJson(s, '/host');
      expect(host.body.cgroup.parents.memory).toBe(parent);
    });
  },
  skipReason,
);

const sweepSkip = skipReason ?? (driver === 'none' ? 'this host offers no usable cgroups' : null);
describe.skipIf(sweepSkip !== null)(`layer D start-up sweep${sweepSkip !== null ? ` [skipped: ${sweepSkip}]` : ''}`, () => {
  let s: RunningServer | null = null;
  const pids: number[] = [];
  const stale: string[] = [];
  beforeAll(async () => {
    s = await startServer({ env: { ZVIZ_WARM_MAX: '0' } });
    pids.push(s.pid);
  });
  afterAll(async () => {
    await s?.stop();
    for (const d of stale) if (existsSync(d)) rmdirSync(d);
    await expectNoLeftovers(pids);
  });

  test("a restarted server removes sandbox folders of a dead server's pid from its zviz parents", async () => {
    const pid = deadPid();
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    const host = await getJson(s!, '/host');
    const parents: Record<string, string> = host.body.cgroup.parents;
    const keys = Object.keys(parents).filter((k) => ['memory', 'pids', 'unified'].includes(k));
    expect(keys.length).toBeGreaterThan(0);
    for (const h of keys) expect(existsSync(parents[h]!), parents[h]).toBe(true);
    // A stopping server sweeps dead servers' folders itself, so the leftovers are planted
    // after it stopped, as a crashed server would leave them for the next start.
    await s!.stop();
    s = null;
    for (const h of keys) {
      const parent = parents[h]!;
      mkdirSync(parent, { recursive: true });
      const d = join(parent, `zviz-${pid}-stale`);
      mkdirSync(d);
      stale.push(d);
    }
    for (const d of stale) expect(existsSync(d), d).toBe(true);
    s = await startServer({ env: { ZVIZ_WARM_MAX: '0' } });
    pids.push(s.pid);
    for (const d of stale) expect(existsSync(d), d).toBe(false);
    expect(s.logs()).toContain('swept leftovers of a previous server');
  });
});

/** The v2 blocks apply only where ZViz's cgroup driver is v2. */
const notV2 = driver !== 'v2' ? `this host's cgroup driver is ${driver}, not v2` : null;
describeWhere(notV2, 'layer D on cgroup v2', () => {
  let s!: RunningServer;
  coldServerForSuite((started) => (s = started));

  test('the server reports the v2 driver', async () => {
    expect((await getJson(s, '/host')).body.cgroup.driver).toBe('v2');
  });

  test("allocating 2 GiB under memoryMb 64 returns 'oom'", async () => {
    const r = await s.invoke({ runtime: 'python', code: PY_MEMORY_BOMB, limits: { memoryMb: 64, timeoutMs: 10_000 } });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 'oom', reason: 'memory' });
    expect(r.oomKills).toBeGreaterThanOrEqual(1);
  });

  test('a python fork loop under pids 16 sees EAGAIN and leaves no process', async () => {
    const before = sandboxProcesses(s.pid);
    const r = await s.invoke({ runtime: 'python', code: PY_FORK_LOOP, limits: { pids: 16 } });
    expect(r.stdout).toMatch(/BlockingIOError errno=11/);
    expect(await newSandboxProcesses(s.pid, before)).toEqual([]);
  });

  test('four busy threads for 2 s under cpus 0.5 are charged what they used, at most about half their wall time (1000 ms of 2 s)', async () => {
    const r = await s.invoke({ runtime: 'python', code: pyBurn(4, 2), limits: { cpus: 0.5, timeoutMs: scaledMs(10_000, 60_000) } }); // at most the default profile's max
    expectBurnCharged(r);
  });
}, skipReason);

/**
 * POST /invoke until a warm sandbox served it (a pool fills after its first claims, and
 * refills only once the host has an idle core: on a slow machine that takes more tries).
 */
async function invokeWarm(s: RunningServer, body: Record<string, unknown>, tries = 40): Promise<any> {
  let r: any;
  for (let i = 0; i < tries * timeScale(); i++) {
    r = await s.invoke(body);
    if (r.warm === true) return r;
    await sleep(150);
  }
  return r;
}

const MIB_OF_STDIN = 'x'.repeat(1 << 20);
/** Functions that print 1 and never read their stdin. */
const IGNORE_STDIN = { python: 'print(1)', node: 'console.log(1)', bash: 'echo 1' } as const;

// The supervisor writes stdin (and a warm function's work) into pipes the function may
// close unread. A write to such a pipe must end in EPIPE, handled, never in a SIGPIPE that
// kills the supervisor: the result, and the CPU it measured, would be lost.
describe.skipIf(skipReason !== null)(`layer D: the supervisor survives pipes the sandbox closes${skipReason ? ` [skipped: ${skipReason}]` : ''}`, () => {
  describe('cold sandboxes', () => {
    let s!: RunningServer;
    coldServerForSuite((started) => (s = started));

    test.each(Object.entries(IGNORE_STDIN))('inline %s with 1 MiB of unread stdin ends ok with its output', async (runtime, code) => {
      const r = await s.invoke({ runtime, code, stdin: MIB_OF_STDIN });
      expect({ status: r.status, stdout: r.stdout, warm: r.warm }).toEqual({ status: 'ok', stdout: '1\n', warm: false });
      expect(r.cpuMs).toBeGreaterThan(0);
    });

    test('the function gets the default SIGPIPE back: `yes | head -1` ends yes by SIGPIPE (141)', async () => {
      // The supervisor ignores SIGPIPE, and an ignored signal survives execve: the function
      // must not inherit that, or its pipelines would behave unlike anywhere else.
      const r = await s.invoke({ runtime: 'bash', code: 'yes | head -1; echo "${PIPESTATUS[0]}"; grep SigIgn /proc/self/status' });
      expect(r.stdout.split('\n').slice(0, 2)).toEqual(['y', '141']);
      const ignored = BigInt(`0x${/SigIgn:\s*([0-9a-f]+)/.exec(r.stdout)![1]}`);
      expect(ignored & (1n << 12n)).toBe(0n); // bit 13 - 1: SIGPIPE
    });
  });

  describe('warm sandboxes', () => {
    let s: RunningServer | undefined;
    beforeAll(async () => {
      s = await startServer({ env: { ZVIZ_WARM_PER_POOL: '1', ZVIZ_WARM_IDLE_MS: '2000' } });
    });
    afterAll(async () => {
      await s?.stop();
      await expectNoLeftovers(s ? [s.pid] : []);
    });

    test.each(Object.entries(IGNORE_STDIN))('inline %s with 1 MiB of unread stdin, warm, ends ok with its output', async (runtime, code) => {
      const r = await invokeWarm(s!, { runtime, code, stdin: MIB_OF_STDIN });
      expect({ status: r.status, stdout: r.stdout, warm: r.warm }).toEqual({ status: 'ok', stdout: '1\n', warm: true });
    });

    test('a deployed bash handler that leaves its 1 MiB event unread answers, warm', async () => {
      const put = await s!.request('/functions/unread', { method: 'PUT', body: { runtime: 'bash', code: 'printf \'{"n":1}\'\n' }, auth: 'tenant' });
      expect(put.status).toBeLessThan(300);
      const r = await invokeWarm(s!, { function: 'unread', input: MIB_OF_STDIN });
      expect({ status: r.status, output: r.output, warm: r.warm }).toEqual({ status: 'ok', output: { n: 1 }, warm: true });
    });

    test('a warm bash sandbox that times out while its work is still being written reports the timeout', async () => {
      // bash reads its work from fd 3 a byte at a time: 1 MiB of code is still pending when
      // the timeout kills the sandbox, and the supervisor's next write meets a closed pipe.
      const code = `sleep 30 # ${'x'.repeat(1000 * 1000)}`;
      const args = Array.from({ length: 256 }, () => 'y'.repeat(4000));
      const r = await invokeWarm(s!, { runtime: 'bash', code, args, limits: { timeoutMs: 100 } }, 20);
      expect({ status: r.status, reason: r.reason, warm: r.warm }).toEqual({ status: 'timeout', reason: 'timeout', warm: true });
      expect((await s!.invoke({ runtime: 'bash', code: 'echo alive' })).stdout).toBe('alive\n');
    });
  });
});

describeWhere(notV2, 'layer D on cgroup v2: servers in cgroups of their own or shared', () => {
  const made: string[] = [];
  let sleeper: ChildProcess | null = null;
  afterAll(() => {
    if (sleeper?.pid && sleeper.exitCode === null) sleeper.kill('SIGKILL');
    // Deepest first: the server leaf and `zviz` before the test's own cgroup.
    for (const d of made.reverse()) {
      for (const sub of [SERVER_LEAF, CGROUP_PARENT]) if (existsSync(join(d, sub))) rmdirSync(join(d, sub));
      if (existsSync(d)) rmdirSync(d);
    }
  });

  /** A fresh cgroup beneath ours (the root inside the VM), named as nothing of ZViz's is. */
  function freshCgroup(): string {
    const own = procCgroups('self').get('')!;
    const d = join(CGROUP_ROOT, own, `test-deleg-${process.pid}-${made.length}`);
    mkdirSync(d);
    made.push(d);
    return d;
  }

  test('a server sharing its cgroup with another process stops with one line: the pids and how to delegate', async () => {
    const d = freshCgroup();
    sleeper = spawn('/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && exec sleep 600', 'sh', d], { stdio: 'ignore' });
    const sleeperPid = sleeper.pid!;
    await pollUntil(() => readTrim(join(d, 'cgroup.procs')) ?? '', (t) => t.split('\n').includes(String(sleeperPid)), 5000, 20);
    let error = '';
    try {
      const p = await startServerProcess({ memoryCgroup: d, env: { ZVIZ_WARM_MAX: '0' } });
      await p.stop();
    } catch (e) {
      error = (e as Error).message;
    }
    const line = error.split('\n').find((l) => l.includes('Cannot delegate cgroup controllers')) ?? '';
    expect(line, error).toContain(`Cannot delegate cgroup controllers from ${d}: it also holds processes ${sleeperPid}`);
    expect(line).toContain('Delegate=yes');
    expect(line).toContain('systemd-run --scope -p Delegate=yes');
    sleeper.kill('SIGKILL');
  });

  test('a server alone in a cgroup of its own moves itself into the zviz-server leaf and runs sandboxes beside it', async () => {
    const d = freshCgroup();
    const p = await startServerProcess({ memoryCgroup: d, env: { ZVIZ_WARM_MAX: '0' } });
    try {
      expect(procCgroups(p.pid).get('')).toBe(`${procCgroups('self').get('')!.replace(/\/$/, '')}/${basename(d)}/${SERVER_LEAF}`);
      expect(readTrim(join(d, 'cgroup.subtree_control'))!.split(' ')).toEqual(expect.arrayContaining(['memory', 'pids']));
      expect(readTrim(join(d, CGROUP_PARENT, 'cgroup.subtree_control'))!.split(' ')).toEqual(expect.arrayContaining(['memory', 'pids']));
    } finally {
      expect(await p.stop()).toBe(0);
    }
  });
}, skipReason);
