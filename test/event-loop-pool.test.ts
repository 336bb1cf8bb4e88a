// Privileged: the pool waits on sandboxes from the event loop (worker-pool/sandbox.ts), on
// threads of libuv's pool, not on a JS thread per sandbox. A server sizes that pool for its
// configuration before anything starts it (server/start.cts): with libuv's default 4
// threads, 8 sandboxes could not run at once. In process, SandboxPool's own accounting
// (maxSandboxes, maxQueue) and its tracking of teardowns after the answer are checked
// exactly, without timing.
import { availableParallelism } from 'node:os';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Profile } from '../profiles/schema.js';
import type { Host } from '../worker-pool/host/index.js';
import { NETNS_DIR } from '../worker-pool/host/names.js';
import { threadpoolSize } from '../worker-pool/threadpool.cjs';
import { PACKAGE_ROOT } from '../worker-pool/util/package-root.js';
import { hostLeftovers, leftoversNotOfOtherServers, settledLeftovers } from './support/leftovers.js';
import { networkToolsMissing } from './support/net-topology.js';
import { run, sleepingSandboxes as sleepers } from './support/sandboxes.js';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';
import { sh, trySh } from './support/shell.js';
import { pollUntil, timeScale, token } from './support/wait.js';

/** Threads of a process, as the kernel lists them. */
const threadsOf = (pid: number): number => readdirSync(`/proc/${pid}/task`).length;

const SLEEP_S = Math.ceil(8 * timeScale());

describe.skipIf(privilegedReason() !== null)('a server waits on its sandboxes without a thread each', () => {
  let s: RunningServer;
  let before: string[] = [];

  beforeAll(async () => {
    before = hostLeftovers();
    s = await startServer({ env: { ZVIZ_WARM_MAX: '0', ZVIZ_MAX_SANDBOXES: '8' } });
  });
  afterAll(async () => {
    if (s) expect(await s.stop()).toBe(0);
    const left = await settledLeftovers(s ? [s.pid] : [], before);
    expect(left, left.join('\n')).toEqual([]);
  });

  it("libuv's pool was sized for the configuration before it started (it starts every thread at once)", () => {
    expect(threadsOf(s.pid)).toBeGreaterThanOrEqual(threadpoolSize(8, 0));
  });

  it('8 sleeping sandboxes run at once, and the server gains no thread per sandbox (piscina: at most one per core)', async () => {
    const idle = threadsOf(s.pid);
    const runs = Array.from({ length: 8 }, () => run(s, 'bash', `exec sleep ${SLEEP_S}`, { limits: { timeoutMs: 3 * SLEEP_S * 1000 } }));
    // With 4 threads in libuv's pool, 4 runs would hold them all and the other 4 sandboxes
    // would never be released while these sleep.
    const seen = await pollUntil(() => sleepers(s.pid), (n) => n === 8, (SLEEP_S * 1000) / 2, 50);
    const during = threadsOf(s.pid);
    expect(seen).toBe(8);
    expect(during - idle).toBeLessThanOrEqual(availableParallelism());
    for (const r of await Promise.all(runs)) expect(r.status, JSON.stringify(r)).toBe('ok');
  });
});

const netSkip = privilegedReason() ?? networkToolsMissing();

describe.skipIf(netSkip !== null)(`SandboxPool in process: its own accounting, and teardowns after the answer${netSkip ? ` [skipped: ${netSkip}]` : ''}`, () => {
  const router = `evloop-r-${token().slice(0, 6)}`;
  let host: Host;
  let egress: Profile;
  let before: string[] = [];
  // The built modules, all of them: the pool's piscina worker is dist/worker-pool/worker.js,
  // and the native bindings may be declared once per process.
  let built: typeof import('../worker-pool/pool.js');
  let commandTask: typeof import('../worker-pool/task.js').commandTask;
  let networkSchema: typeof import('../profiles/schema.js').networkSchema;
  let DEFAULT_WARM: typeof import('../worker-pool/warm.js').DEFAULT_WARM;

  beforeAll(async () => {
    const load = async <T>(path: string): Promise<T> => (await import(pathToFileURL(join(PACKAGE_ROOT, 'dist', path)).href)) as T;
    built = await load('worker-pool/pool.js');
    ({ commandTask } = await load<typeof import('../worker-pool/task.js')>('worker-pool/task.js'));
    ({ networkSchema } = await load<typeof import('../profiles/schema.js')>('profiles/schema.js'));
    ({ DEFAULT_WARM } = await load<typeof import('../worker-pool/warm.js')>('worker-pool/warm.js'));
    const { openHost } = await load<typeof import('../worker-pool/host/index.js')>('worker-pool/host/index.js');
    const { loadConfig } = await load<typeof import('../server/config.js')>('server/config.js');
    const { loadProfiles } = await load<typeof import('../profiles/index.js')>('profiles/index.js');
    before = hostLeftovers();
    sh('ip', ['netns', 'add', router]);
    const config = loadConfig({});
    const base = loadProfiles(config.profilesDir).get('default')!;
    egress = { ...base, network: networkSchema.parse({ mode: 'egress', allow: [{ cidr: '10.66.0.0/16', ports: [] }] }) };
    host = openHost({ uidBase: config.uidBase, net: { routerNetns: router, pool: '10.199.4.0/24', uplink: null }, profiles: [egress] });
  });
  afterAll(() => {
    host?.close();
    trySh('ip', ['netns', 'del', router]);
    const left = leftoversNotOfOtherServers([process.pid], before);
    expect(left, left.join('\n')).toEqual([]);
  });

  const task = (n: number, argv: string[], profile: Profile) =>
    commandTask({ id: `evloop-${token().slice(0, 8)}-${n}`, argv, limits: { ...profile.limits.defaults, timeoutMs: 3 * SLEEP_S * 1000 }, profile, runtimes: ['bash'] });
  const ourNetns = () => readdirSync(NETNS_DIR).filter((n) => n.startsWith(`zviz-${process.pid}-`));

  it('maxSandboxes run at once, one more waits (maxQueue), the next is refused with PoolOverloadedError', async () => {
    const pool = new built.SandboxPool({ host: host.layout, maxSandboxes: 2, maxQueue: 1, warm: { ...DEFAULT_WARM, maxSandboxes: 0 } });
    try {
      const none = { ...egress, network: networkSchema.parse({ mode: 'none' }) };
      const first = [0, 1].map((n) => pool.invoke(task(n, ['/usr/bin/sleep', String(SLEEP_S)], none)));
      const third = pool.invoke(task(2, ['/usr/bin/true'], none));
      expect(pool.queued).toBe(1);
      await expect(pool.invoke(task(3, ['/usr/bin/true'], none))).rejects.toBeInstanceOf(built.PoolOverloadedError);
      // Both sleep at once: the pool waits on them from this thread's event loop.
      expect(await pollUntil(() => sleepers(process.pid), (n) => n === 2, (SLEEP_S * 1000) / 2, 50)).toBe(2);
      expect(pool.hostWorkers).toBeLessThanOrEqual(availableParallelism());
      for (const out of await Promise.all([...first, third])) expect(out.ok && out.result.exitCode, JSON.stringify(out)).toBe(0);
    } finally {
      await pool.close();
    }
  });

  it('a burst of 8 egress sandboxes: each answer comes with its teardown pending, and every teardown ends with no cgroup or netns left', async () => {
    const pool = new built.SandboxPool({ host: host.layout, maxSandboxes: 4, maxQueue: 8, warm: { ...DEFAULT_WARM, maxSandboxes: 0 } });
    try {
      const pendingAtAnswer: number[] = [];
      const outs = await Promise.all(
        Array.from({ length: 8 }, (_, n) =>
          pool.invoke(task(n, ['/usr/bin/true'], egress)).then((out) => {
            pendingAtAnswer.push(pool.pendingTeardowns);
            return out;
          }),
        ),
      );
      for (const out of outs) expect(out.ok && out.result.exitCode, JSON.stringify(out)).toBe(0);
      // The answer's own sandbox is still being torn down when the caller sees it.
      for (const p of pendingAtAnswer) expect(p).toBeGreaterThan(0);
      await pool.teardownsSettled();
      expect(pool.pendingTeardowns).toBe(0);
      expect(ourNetns()).toEqual([]);
      const left = leftoversNotOfOtherServers([process.pid], before).filter((e) => !e.endsWith('/zviz'));
      expect(left, left.join('\n')).toEqual([]);
      expect(pool.hostWorkers).toBeLessThanOrEqual(availableParallelism());
    } finally {
      await pool.close();
    }
  });
});
