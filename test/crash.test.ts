// Privileged: crash safety and recovery. A server SIGKILLed under load and started again on
// the same state directory and Redis; one supervisor killed mid-invocation; Redis stopped
// and paused; SIGTERM with a drain deadline; a state directory that is unusable or fills up.
// After each, the host is scanned for everything a dead server could leave (crash-helpers.ts).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { leftoversInScope, ourHostLeftovers, settledLeftoversInScope } from './support/leftovers.js';
import { makeProfilesDir, type ProfilesDir } from './support/profiles.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { supervisorServing, supervisorsOf } from './support/sandboxes.js';
import { freePort } from './support/server-process.js';
import { GENEROUS_QUOTAS, privilegedReason, repoRoot, type Reply, type RunningServer, startServer } from './support/server.js';
import { pollUntil, sleep, waitFor } from './support/wait.js';

const skip = privilegedReason() !== null;

/** Whether the built server has async invocations (another issue adds them). */
function hasAsyncRoute(): boolean {
  return existsSync(join(repoRoot, 'dist', 'server', 'invocation', 'async.js'));
}
const ASYNC_ROUTE = hasAsyncRoute();

/** A bash function that sleeps `seconds`; the fractional part makes its `sleep` process findable. */
const sleeper = (seconds: number, tag: number) => ({ runtime: 'bash', code: `sleep ${seconds}.${String(tag).padStart(3, '0')}; echo done` });

describe.skipIf(skip)('crash safety', () => {
  const scratch: string[] = [];
  let profiles: ProfilesDir;
  const routerNetns = `zvcrash-${process.pid}`;
  const adminToken = 'crash-suite-admin-token-0123456789';
  let baseline: string[] = [];

  beforeAll(() => {
    profiles = makeProfilesDir({ 'egress-closed': (p) => (p.network = { mode: 'egress', allow: [] }) });
    execFileSync('ip', ['netns', 'add', routerNetns]);
    baseline = leftoversInScope({ deadPids: [], livePids: [], routerNetns });
  });
  afterAll(() => {
    profiles?.remove();
    try {
      execFileSync('ip', ['netns', 'del', routerNetns]);
    } catch {
      // never made
    }
    for (const d of scratch) rmSync(d, { recursive: true, force: true });
  });

  const tempDir = (prefix: string): string => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    scratch.push(d);
    return d;
  };

  const baseEnv = (redis: TestRedis | null): Record<string, string> => ({
    ZVIZ_ADMIN_TOKEN: adminToken,
    ZVIZ_PROFILES_DIR: profiles.dir,
    ZVIZ_NET_ROUTER_NETNS: routerNetns,
    ZVIZ_NET_POOL: '10.199.64.0/24',
    ZVIZ_LEASE_SLACK_MS: '1000',
    ...(redis ? { ZVIZ_REDIS_URL: redis.url } : {}),
    // To run the suite against another supervisor build (a candidate fix, the ASan one).
    ...(process.env.ZVIZ_SUPERVISOR ? { ZVIZ_SUPERVISOR: process.env.ZVIZ_SUPERVISOR } : {}),
  });

  describe('a server SIGKILLed under load, started again on the same state', () => {
    let redis: TestRedis;
    let first: RunningServer;
    let second: RunningServer | null = null;
    let stateDir: string;
    let pairKey: string;
    let asyncId: string | null = null;
    // Async invocations are recovered by the host that ran them (host name and port): the
    // restarted server keeps the port.
    let env: Record<string, string>;

    beforeAll(async () => {
      redis = await startRedis();
      stateDir = tempDir('zvcrash-state-');
      env = { ...baseEnv(redis), ZVIZ_PORT: String(await freePort()) };
      first = await startServer({ stateDir, env, compatAuth: false });
      const pair = await first.request('/admin/tenants', { auth: 'admin', body: { name: 'pair', quotas: { ...GENEROUS_QUOTAS, concurrency: 2 } } });
      expect(pair.status).toBe(201);
      pairKey = pair.body.apiKey;
    });
    afterAll(async () => {
      await second?.stop();
      if (first && second === null) await first.stop('SIGKILL');
      await redis?.stop();
    });

    it('leaves no sandbox, supervisor, cgroup, netns, veth, nft chain, mount or state file after the restart sweep', async () => {
      // Warm pools fill for both profiles once they have seen a claim.
      for (const profile of ['default', 'egress-closed']) {
        expect((await first.request('/invoke', { body: { runtime: 'bash', code: 'echo warm', profile } })).status).toBe(200);
      }
      await sleep(1500);
      const slow = { limits: { timeoutMs: 4000 } };
      const inFlight: Array<Promise<Reply | null>> = [];
      const send = (body: Record<string, unknown>, auth?: { bearer: string }) =>
        inFlight.push(first.request('/invoke', { body: { ...body, ...slow }, ...(auth ? { auth } : {}) }).catch(() => null));
      // Six at once: two hold both of tenant 'pair''s slots, two run with egress.
      send(sleeper(30, 1), { bearer: pairKey });
      send(sleeper(30, 2), { bearer: pairKey });
      send({ ...sleeper(30, 3), profile: 'egress-closed' });
      send({ ...sleeper(30, 4), profile: 'egress-closed' });
      send(sleeper(30, 5));
      send(sleeper(30, 6));
      if (ASYNC_ROUTE) {
        const r = await first.request('/invoke?mode=async', { body: { ...sleeper(30, 7), ...slow } });
        expect(r.status).toBe(202);
        asyncId = r.body.id;
      }
      const markers = [1, 2, 3, 4, 5, 6, ...(ASYNC_ROUTE ? [7] : [])].map((t) => `sleep 30.${String(t).padStart(3, '0')}`);
      await waitFor(() => (markers.every((m) => supervisorServing(first.pid, m) !== null) ? true : null), 'every slow invocation to run');
      expect(supervisorsOf(first.pid).length).toBeGreaterThanOrEqual(markers.length);

      expect(await first.stop('SIGKILL')).toBeNull();
      const deadPid = first.pid;
      // The callers see their connection reset, not an answer.
      expect((await Promise.all(inFlight)).every((r) => r === null)).toBe(true);

      second = await startServer({ stateDir, env, tenant: false, compatAuth: false });
      expect(second.logs()).toContain('swept');
      // The sweep ran before the port opened: nothing of the dead server is left now.
      const left = await settledLeftoversInScope({ deadPids: [deadPid], livePids: [second.pid], routerNetns }, 3000);
      expect(left.filter((l) => !baseline.includes(l))).toEqual([]);
    });

    it("releases the dead server's concurrency slots (at the lease TTL): a tenant with concurrency 2 runs 2 at once again", async () => {
      const s = second!;
      const usage = () => s.request('/admin/tenants/pair', { auth: 'admin' });
      const drained = await pollUntil(usage, (r) => r.body.usage?.inFlight === 0, 15_000, 200);
      expect(drained.body.usage.inFlight).toBe(0);
      const both = await Promise.all([1, 2].map((t) => s.request('/invoke', { body: sleeper(1, 100 + t), auth: { bearer: pairKey } })));
      expect(both.map((r) => r.status)).toEqual([200, 200]);
      expect(both.map((r) => r.body.stdout)).toEqual(['done\n', 'done\n']);
    });

    it.runIf(ASYNC_ROUTE)("reports the dead server's async invocation as failed with reason 'host-restart', and never runs it again", async () => {
      const s = second!;
      const r = await pollUntil(() => s.request(`/invocations/${asyncId}`, { auth: { bearer: first.apiKey! } }), (x) => x.body?.status === 'failed', 10_000, 200);
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ id: asyncId, status: 'failed', reason: 'host-restart' });
      // Never run twice: no sandbox of it appears on the new server, and no run of it (any
      // status but 'failed') is in the audit file both servers appended to.
      await sleep(2000);
      expect(supervisorServing(s.pid, 'sleep 30.007')).toBeNull();
      expect((await s.request(`/invocations/${asyncId}`, { auth: { bearer: first.apiKey! } })).body.status).toBe('failed');
      const runs = readFileSync(join(stateDir, 'audit.log'), 'utf8')
        .split('\n')
        .filter((l) => l.includes(`"invocationId":"${asyncId}"`) && l.includes('"type":"invocation"') && !l.includes('"status":"failed"'));
      expect(runs).toEqual([]);
    });
    if (!ASYNC_ROUTE) {
      it.todo("reports the dead server's async invocations as failed with reason 'host-restart' (the built server has no POST /invoke?mode=async yet)");
    }

    it('stopping the second server leaves nothing of ZViz on the host', async () => {
      const s = second!;
      second = null;
      expect(await s.stop()).toBe(0);
      expect(await pollUntil(() => ourHostLeftovers([first.pid, s.pid]), (l) => l.length === 0, 3000, 100)).toEqual([]);
      const left = await settledLeftoversInScope({ deadPids: [first.pid, s.pid], livePids: [], routerNetns });
      expect(left.filter((l) => !baseline.includes(l))).toEqual([]);
    });
  });
  describe('one supervisor SIGKILLed mid-invocation', () => {
    let s: RunningServer;
    beforeAll(async () => {
      s = await startServer({ env: baseEnv(null), compatAuth: false });
    });
    afterAll(async () => {
      await s?.stop();
    });

    const warmSize = async (): Promise<number> => {
      const text = (await s.request('/metrics', { auth: 'admin' })).body as string;
      return Number(/^zviz_warm_pool_size\{pool="inline:bash:default"\} (\d+)/m.exec(text)?.[1] ?? 0);
    };

    /** Host paths of the cgroup folders a process is in that are a sandbox's (`…/zviz-<id>`). */
    const sandboxCgroupsOf = (pid: number): string[] => {
      const mounts = new Map<string, string>();
      for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
        const [pre, post] = line.split(' - ');
        const [fstype, , opts] = (post ?? '').split(' ');
        if (fstype === 'cgroup') for (const o of (opts ?? '').split(',')) mounts.set(o, pre!.split(' ')[4]!);
      }
      const out: string[] = [];
      for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
        const [, controllers = '', path = ''] = line.split(':');
        const mount = mounts.get(controllers.split(',')[0]!);
        if (mount && /\/zviz-[^/]+$/.test(path)) out.push(join(mount, path));
      }
      return out;
    };

    const victim = { supervisor: 0, cgroups: [] as string[] };
    const uidBase = 1_000_000_000;

    it("fails only that invocation, with 502 SANDBOX_FAILED 'supervisor died …' (it had started: never a retryable 503); the others succeed and the pool refills", async () => {
      expect((await s.request('/invoke', { body: { runtime: 'bash', code: 'echo warm' } })).status).toBe(200);
      await pollUntil(warmSize, (n) => n > 0, 10_000, 200);
      const doomed = s.request('/invoke', { body: { ...sleeper(8, 201), limits: { timeoutMs: 20_000 } } });
      const others = [202, 203, 204].map((t) => s.request('/invoke', { body: sleeper(2, t) }));
      victim.supervisor = await waitFor(() => supervisorServing(s.pid, 'sleep 8.201'), "the victim's supervisor");
      const fn = Number(execFileSync('pgrep', ['-f', '^sleep 8.201$'], { encoding: 'utf8' }).trim().split('\n')[0]);
      victim.cgroups = sandboxCgroupsOf(fn);
      expect(victim.cgroups.length).toBeGreaterThan(0);
      process.kill(victim.supervisor, 'SIGKILL');

      const failed = await doomed;
      expect(failed.status).toBe(502);
      expect(failed.body.error.code).toBe('SANDBOX_FAILED');
      expect(failed.body.error.message).toMatch(/supervisor died before reporting a result/);
      const ok = await Promise.all(others);
      expect(ok.map((r) => [r.status, r.body.stdout])).toEqual([
        [200, 'done\n'],
        [200, 'done\n'],
        [200, 'done\n'],
      ]);
      // The pool it may have come from refills, and the next invocation gets a warm sandbox.
      expect(await pollUntil(warmSize, (n) => n > 0, 10_000, 200)).toBeGreaterThan(0);
      const next = await s.request('/invoke', { body: { runtime: 'bash', code: 'echo again' } });
      expect(next.body).toMatchObject({ status: 'ok', stdout: 'again\n', warm: true });
    });

    // Regressions: init re-arms PR_SET_PDEATHSIG after its setresuid(0) (a credential
    // change clears it), and the worker retries removing a killed supervisor's cgroups.
    it("the killed supervisor's sandbox dies with it", async () => {
      const uids = [uidBase + 2 * victim.supervisor, uidBase + 2 * victim.supervisor + 1];
      const alive = () =>
        leftoversInScope({ deadPids: [], livePids: [], uidBase }).filter(
          (l) => uids.some((u) => l.includes(`uid ${u}`)) || l.includes(`(parent ${victim.supervisor})`),
        );
      expect(await pollUntil(alive, (l) => l.length === 0, 3000, 100)).toEqual([]);
    });
    // The bug (removeLeftCgroups, now in worker-pool/sandbox.ts): one rmdir right after the supervisor died,
    // while the sandbox's processes are still exiting (EBUSY), and no retry; nothing kills
    // what is inside first.
    it("the killed supervisor's cgroup folders are removed while the server runs", async () => {
      const left = () => victim.cgroups.filter((c) => existsSync(c));
      expect(await pollUntil(left, (l) => l.length === 0, 3000, 100)).toEqual([]);
    });

    it('stopping the server leaves nothing behind', async () => {
      const server = s;
      expect(await server.stop()).toBe(0);
      expect(await pollUntil(() => ourHostLeftovers([server.pid]), (l) => l.length === 0, 3000, 100)).toEqual([]);
    });
  });
  describe('Redis stopped, then paused (a partition), while the server runs', () => {
    let redis: TestRedis;
    let s: RunningServer;
    let auth: { bearer: string };
    /** cpuMs + brokerCpuMs of every invocation that ran: what the tenant must have been charged, once. */
    const ran: number[] = [];
    // 200 ms of CPU, then a sleep: long enough to be in flight when Redis goes away.
    const burn = (sleepS: number) => ({
      runtime: 'python',
      code: `import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\ntime.sleep(${sleepS})\nprint('burnt')`,
      limits: { timeoutMs: 20_000 },
    });
    const usage = async () => (await s.request('/admin/tenants/metered', { auth: 'admin' })).body.usage as { inFlight: number; cpuMsInWindow: number };
    const invoke = async (body: Record<string, unknown>): Promise<Reply> => {
      const r = await s.request('/invoke', { body, auth });
      if (r.status === 200) ran.push(r.body.cpuMs + r.body.brokerCpuMs);
      return r;
    };

    beforeAll(async () => {
      redis = await startRedis();
      s = await startServer({ env: baseEnv(redis), compatAuth: false, tenant: false });
      const t = await s.request('/admin/tenants', {
        auth: 'admin',
        body: { name: 'metered', quotas: { concurrency: 4, invocationsPerMinute: 10_000, cpuSeconds: 10_000, cpuWindowSeconds: 3600 } },
      });
      expect(t.status).toBe(201);
      auth = { bearer: t.body.apiKey };
      expect((await invoke(burn(0))).status).toBe(200);
    });
    afterAll(async () => {
      const pid = redis?.pid();
      if (pid) process.kill(pid, 'SIGCONT');
      await s?.stop();
      await redis?.stop();
    });

    const expectStateUnavailable = (r: Reply): void => {
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('STATE_UNAVAILABLE');
      expect(r.headers.get('retry-after')).toBe('1');
    };

    it('stopped: new invocations get 503 STATE_UNAVAILABLE with Retry-After, the one in flight still answers, and service resumes when Redis is back', async () => {
      const inFlight = invoke(burn(2));
      expect((await pollUntil(usage, (u) => u.inFlight === 1, 5000, 200)).inFlight).toBe(1);
      await redis.kill('SIGTERM');
      expectStateUnavailable(await invoke({ runtime: 'bash', code: 'echo must-not-run' }));
      const ready = await s.request('/readyz', { auth: false });
      expect(ready.status).toBe(503);
      expect(ready.body.checks.redis.ok).toBe(false);
      expect((await inFlight).status).toBe(200);

      await redis.restart();
      const back = await pollUntil(() => invoke(burn(0)), (r) => r.status === 200, 15_000, 200);
      expect(back.status).toBe(200);
      expect((await s.request('/readyz', { auth: false })).status).toBe(200);
    });

    it('paused (SIGSTOP): requests fail with 503 within the command timeout instead of hanging; after SIGCONT service resumes', async () => {
      const inFlight = invoke(burn(2));
      expect((await pollUntil(usage, (u) => u.inFlight === 1, 5000, 200)).inFlight).toBe(1);
      process.kill(redis.pid()!, 'SIGSTOP');
      try {
        const started = Date.now();
        expectStateUnavailable(await invoke({ runtime: 'bash', code: 'echo must-not-run' }));
        // The command timeout is 2 s: an answer, not a hang.
        expect(Date.now() - started).toBeLessThan(4000);
        expect((await s.request('/readyz', { auth: false })).status).toBe(503);
        // Its release times out (and is retried): the response still comes.
        expect((await inFlight).status).toBe(200);
        // Let a retry of that release queue up behind the first attempt.
        await sleep(3000);
      } finally {
        process.kill(redis.pid()!, 'SIGCONT');
      }
      const back = await pollUntil(() => invoke(burn(0)), (r) => r.status === 200, 15_000, 200);
      expect(back.status).toBe(200);
    });

    it('leaks no slot and charges no CPU twice: 0 in flight, and the CPU charged is what the invocations that ran used', async () => {
      // The retries of the releases Redis missed run within 1 + 2 + 4 + 8 + 16 s.
      const expected = ran.reduce((a, b) => a + b, 0);
      let u = await pollUntil(usage, (x) => x.inFlight === 0 && x.cpuMsInWindow >= expected - ran.length, 35_000, 500);
      expect(u.inFlight).toBe(0);
      await sleep(5000);
      u = await usage();
      // Each charge is its cpuMs rounded up to a whole ms; the response rounds to 0.1 ms.
      expect(u.cpuMsInWindow).toBeGreaterThanOrEqual(expected - ran.length);
      expect(u.cpuMsInWindow).toBeLessThanOrEqual(expected + ran.length);
      expect(u.inFlight).toBe(0);
    });
  });
  describe('SIGTERM with a drain deadline (ZVIZ_DRAIN_MS)', () => {
    it('a short deadline and an invocation sleeping 15 s: exits non-zero at the deadline, logged, leaving nothing behind', async () => {
      const s = await startServer({ env: { ...baseEnv(null), ZVIZ_DRAIN_MS: '500' }, compatAuth: false });
      const inFlight = s
        .request('/invoke', { body: { ...sleeper(15, 301), profile: 'egress-closed', limits: { timeoutMs: 30_000 } } })
        .catch(() => null);
      try {
        await waitFor(() => supervisorServing(s.pid, 'sleep 15.301'), 'the invocation to run');
      } catch (e) {
        // Never leave the server running (it would hold its sandbox and pool address).
        await s.stop('SIGKILL');
        throw e;
      }
      const started = Date.now();
      const code = await s.stop('SIGTERM');
      expect(code).toBe(1);
      // At the deadline (and its teardown), not when the function would have ended.
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(s.logs()).toContain('drain deadline passed');
      // The caller gets an answer: its invocation was killed at the deadline.
      const r = await inFlight;
      expect(r?.status).toBe(200);
      expect(r?.body).toMatchObject({ status: 'killed', signal: 'SIGKILL' });
      expect(await pollUntil(() => ourHostLeftovers([s.pid]), (l) => l.length === 0, 3000, 100)).toEqual([]);
      const left = await settledLeftoversInScope({ deadPids: [s.pid], livePids: [], routerNetns });
      expect(left.filter((l) => !baseline.includes(l))).toEqual([]);
    });

    it('a long deadline: the invocation in flight finishes, new ones get 503 SHUTTING_DOWN meanwhile, then it exits 0', async () => {
      const s = await startServer({ env: { ...baseEnv(null), ZVIZ_DRAIN_MS: '20000' }, compatAuth: false });
      const inFlight = s.request('/invoke', { body: sleeper(2, 302) });
      await waitFor(() => supervisorServing(s.pid, 'sleep 2.302'), 'the invocation to run');
      process.kill(s.pid, 'SIGTERM');
      await sleep(200);
      const refused = await s.request('/invoke', { body: { runtime: 'bash', code: 'echo late' } });
      expect(refused.status).toBe(503);
      expect(refused.body.error.code).toBe('SHUTTING_DOWN');
      expect(refused.headers.get('retry-after')).not.toBeNull();
      expect((await s.request('/readyz', { auth: false })).status).toBe(503);
      const done = await inFlight;
      expect([done.status, done.body.stdout]).toEqual([200, 'done\n']);
      expect(await s.stop()).toBe(0);
      expect(await pollUntil(() => ourHostLeftovers([s.pid]), (l) => l.length === 0, 3000, 100)).toEqual([]);
    });

    it('nothing in flight: it keeps answering 503 SHUTTING_DOWN with Connection: close for the notice period (cut to the deadline), then exits 0', async () => {
      const s = await startServer({ env: { ...baseEnv(null), ZVIZ_DRAIN_MS: '1500', ZVIZ_DRAIN_NOTICE_MS: '5000' }, compatAuth: false });
      const exited = s.stop('SIGTERM');
      // Well after the drain had nothing left to wait for, a load balancer that has not seen
      // the 503 on /readyz yet still gets an answer, not a refused or dropped connection.
      await sleep(700);
      const refused = await s.request('/invoke', { body: { runtime: 'bash', code: 'echo late' } });
      expect([refused.status, refused.body.error?.code, refused.headers.get('connection')]).toEqual([503, 'SHUTTING_DOWN', 'close']);
      const ready = await s.request('/readyz', { auth: false });
      expect([ready.status, ready.headers.get('connection')]).toEqual([503, 'close']);
      // The notice is longer than the deadline: the deadline ends it, with nothing to cut short.
      expect(await exited).toBe(0);
      expect(s.logs()).not.toContain('drain deadline passed');
    });
  });
  describe('a state directory that is unusable or fills up', () => {
    const mounted: string[] = [];
    afterAll(() => {
      for (const m of mounted.splice(0)) execFileSync('umount', ['-l', m]);
    });

    /** A tmpfs of `size` on a fresh temp dir (named without 'zviz': the mount scans look for that). */
    const tmpfs = (size: string, ...opts: string[]): string => {
      const dir = tempDir('zvstate-');
      execFileSync('mount', ['-t', 'tmpfs', '-o', [`size=${size}`, 'mode=0700', ...opts].join(','), 'tmpfs', dir]);
      mounted.push(dir);
      return dir;
    };
    /** Writes zeros into `dir` until the file system is full. */
    const fill = (dir: string): string => {
      const filler = join(dir, 'filler');
      const chunk = Buffer.alloc(64 * 1024);
      try {
        for (;;) writeFileSync(filler, chunk, { flag: 'a' });
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
      }
      return filler;
    };

    /** Runs the built server once; resolves when it exits (or, if it listens, kills it). */
    const startOnce = (env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string; listened: boolean }> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [join(repoRoot, 'dist', 'server', 'main.js')], {
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ZVIZ_HOST: '127.0.0.1', ZVIZ_PORT: '0', ...baseEnv(null), ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        let listened = false;
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (!listened && stdout.includes('"msg":"listening"')) {
            listened = true;
            child.kill('SIGTERM');
          }
        });
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.on('exit', (code) => {
          clearTimeout(timer);
          resolve({ code, stderr, stdout, listened });
        });
      });

    it.each([
      ['a file', () => {
        const f = join(tempDir('zvstate-'), 'state');
        writeFileSync(f, 'not a directory');
        return { dir: f, why: /not a directory|file already exists/ };
      }],
      ['on a read-only file system', () => ({ dir: tmpfs('1m', 'ro'), why: /read-only file system/ })],
      ['on a full file system', () => {
        const dir = tmpfs('1m');
        fill(dir);
        return { dir, why: /no space left on device/ };
      }],
    ])('a state directory that is %s stops start-up once, with one line naming the path', async (_what, make) => {
      const { dir, why } = make();
      const r = await startOnce({ ZVIZ_STATE_DIR: dir });
      expect(r.listened).toBe(false);
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(dir);
      expect(lines[0]).toMatch(why);
    });

    it('a state directory that fills up while serving: /readyz says so, invocations work or fail with a clear 503, nothing crashes, and it recovers', async () => {
      const dir = tmpfs('16m');
      const s = await startServer({ stateDir: dir, env: baseEnv(null), compatAuth: false });
      try {
        expect((await s.request('/invoke', { body: { runtime: 'bash', code: 'echo before' } })).status).toBe(200);
        const filler = fill(dir);
        const ready = await s.request('/readyz', { auth: false });
        expect(ready.status).toBe(503);
        expect(ready.body.checks.stateDir.ok).toBe(false);
        expect(ready.body.checks.stateDir.detail).toContain(dir);
        expect(ready.body.checks.stateDir.detail).toMatch(/no space left on device/);
        for (let i = 0; i < 5; i++) {
          const r = await s.request('/invoke', { body: { runtime: 'bash', code: `echo full-${i}` } });
          if (r.status === 200) expect(r.body.stdout).toBe(`full-${i}\n`);
          else {
            expect(r.status).toBe(503);
            expect(r.body.error.code).toBe('STATE_UNAVAILABLE');
          }
        }

        rmSync(filler);
        const back = await pollUntil(() => s.request('/readyz', { auth: false }), (r) => r.status === 200, 20_000, 500);
        expect(back.body.checks.stateDir.ok).toBe(true);
        const again = await pollUntil(() => s.request('/invoke', { body: { runtime: 'bash', code: 'echo after' } }), (r) => r.status === 200, 20_000, 500);
        expect(again.body.stdout).toBe('after\n');
        expect(s.logs()).not.toMatch(/uncaught|unhandled/i);
      } finally {
        expect(await s.stop()).toBe(0);
      }
    });
  });
});
