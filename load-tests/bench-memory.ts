// Item 4: host memory per warm sandbox beyond the runtime, and the server's RSS over many
// invocations.
//
// Per warm sandbox, on a pool of 8 parked node sandboxes:
//  - the supervisor process on the host: VmRSS, and its private pages (smaps_rollup
//    Private_Clean + Private_Dirty, what it alone keeps resident) plus its page tables
//    (VmPTE) — it answers the sandbox's seccomp notifications itself, there is no broker
//    process;
//  - the sandbox's memory cgroup (v1; user pages + kernel memory, see charged()): the
//    sandbox init, the parked runtime, the tmpfs files under /fn and /tmp, and kernel
//    memory charged after the init joined the cgroup (on v1 it joins after clone3);
//  - the same runtime's own cost, measured in the same run: the same bootstrap, parked on
//    its fd 3 in the same way, started plainly (no sandbox), 8 of them in a memory cgroup
//    of their own.
// Per process, beyond the runtime = supervisor private + PTE + (sandbox cgroup − plain
// runtime).
//
// What that misses is caught by a second, whole-tree figure: the server runs in a memory
// cgroup of the benchmark's own, so everything it and its supervisors charge is in that
// cgroup's hierarchical charge; (charge with 8 parked − charge with none) ÷ 8 − the plain
// runtime counts, in addition, kernel objects the supervisor allocates before the init
// joins its cgroup (the namespaces clone3 creates, the init's task, stack and page
// tables, pipes and sockets). Neither counts kernel memory that is not
// charged to any cgroup, nor page cache of shared files (node, libc) that some other
// cgroup touched first.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { BASE_ENV, bootstrapFor, runtimeDef } from '../worker-pool/runtime/index.js';
import { killAndRemove, type CgroupPlan } from '../worker-pool/host/cgroups.js';
import { sandboxCgroupPrefix } from '../worker-pool/host/names.js';
import { deploy, HELLO, invoke, poolSize, startBenchServer, type BenchServer, type Target } from './bench-server.js';
import { childrenOf, commOf, onAbort, sleep, smapsRollup, statusKiB, statusNumber, summarize, type Summary } from './bench-util.js';

const POOL = 8;

/** The v1 memory cgroup this process is in, or null (v2 / no memory controller). */
export function ownMemoryCgroup(plan: CgroupPlan): string | null {
  if (plan.driver !== 'v1') return null;
  const p = plan.parents.find((x) => x.controllers.includes('memory'));
  return p ? dirname(p.parent) : null;
}

function readBytes(path: string): number {
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return NaN;
  }
}

/** Removes a cgroup of the benchmark's own (killing what is left in it); throws when it stays. */
export function removeCgroup(dir: string): void {
  if (!killAndRemove(dir).removed) throw new Error(`Cannot remove cgroup ${dir}: still busy after 1 s`);
}

export interface RuntimeBaseline {
  /** Charge (see charged()) per plain parked runtime, KiB: 8 of them in one cgroup, ÷ 8. */
  cgroupKiB: number;
  kmemKiB: number;
  rssKiB: number;
}

/**
 * What a v1 memory cgroup (and its descendants) is charged, KiB: user pages from
 * memory.stat (total_rss + total_cache, exact page counts) plus kernel memory
 * (memory.kmem.usage_in_bytes). memory.usage_in_bytes is not used: it includes each CPU's
 * pre-charged batch (up to 64 pages, 256 KiB), so one cgroup's value jumps by 256 KiB.
 */
export function charged(dir: string): { totalKiB: number; kmemKiB: number } {
  let user = NaN;
  try {
    const stat = readFileSync(join(dir, 'memory.stat'), 'utf8');
    const get = (k: string): number => Number(new RegExp(`^${k} (\\d+)$`, 'm').exec(stat)?.[1] ?? NaN);
    user = get('total_rss') + get('total_cache');
  } catch { // the cgroup is gone: its charge reads NaN, which the report shows
  }
  const kmem = readBytes(join(dir, 'memory.kmem.usage_in_bytes'));
  return { totalKiB: (user + kmem) / 1024, kmemKiB: kmem / 1024 };
}

/**
 * The runtime's own: the bootstrap the warm sandbox runs, started plainly with the same
 * environment, parked on a read of fd 3 (a FIFO opened read-write, so it never sees EOF)
 * after its "R" on fd 4 — `count` of them, in one memory cgroup of their own from their
 * first instruction, as many as the pool holds.
 */
async function plainRuntime(memRoot: string, t: Target, count: number): Promise<RuntimeBaseline> {
  const cg = join(memRoot, `bench-${process.pid}-runtime`);
  const dir = mkdtempSync(join(tmpdir(), 'zviz-bench-rt-'));
  mkdirSync(cg);
  const children: Array<ReturnType<typeof spawn>> = [];
  const exits: Array<Promise<unknown>> = [];
  const stopAll = async (): Promise<void> => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(exits);
  };
  const unregister = onAbort(async () => {
    await stopAll();
    removeCgroup(cg);
    rmSync(dir, { recursive: true, force: true });
  });
  try {
    const fifo = join(dir, 'ctl');
    const made = spawn('mkfifo', [fifo]);
    await new Promise((r) => made.on('exit', r));
    // A copy beside the function, as in the sandbox (/fn/.zviz/): under the repository,
    // package.json's "type": "module" would make node load the CommonJS bootstrap as ESM.
    const bootstrap = join(dir, 'bootstrap-node.js');
    writeFileSync(bootstrap, bootstrapFor(runtimeDef('node'), 'inline', '').file.content);
    let args: string[];
    if (t.mode === 'deployed') {
      writeFileSync(join(dir, 'handler.js'), t.fn.code);
      args = [bootstrap, 'handler', join(dir, 'handler.js')];
    } else {
      args = [bootstrap, 'inline', join(dir, 'main.js')];
    }
    for (let i = 0; i < count; i++) {
      const proc = spawn(
        '/bin/sh',
        ['-c', 'echo $$ > "$1/cgroup.procs" && exec 3<>"$2" && shift 2 && exec /usr/bin/node "$@"', 'sh', cg, fifo, ...args],
        { env: { ...BASE_ENV }, stdio: ['ignore', 'ignore', 'ignore', 'ignore', 'pipe'] },
      );
      children.push(proc);
      exits.push(new Promise((r) => proc.on('exit', r)));
      // Ready: the bootstrap's "R" on fd 4, as in the sandbox.
      await new Promise<void>((res, rej) => {
        const timer = setTimeout(() => rej(new Error('plain runtime did not say ready within 10 s')), 10_000);
        proc.stdio[4]!.once('data', () => {
          clearTimeout(timer);
          res();
        });
        proc.once('exit', (code) => rej(new Error(`plain runtime exited with ${code} before ready`)));
      });
    }
    await sleep(300);
    const c = charged(cg);
    const rss = summarize(children.map((p) => statusKiB(p.pid!, 'VmRSS') ?? NaN));
    return { cgroupKiB: c.totalKiB / count, kmemKiB: c.kmemKiB / count, rssKiB: rss.p50 };
  } finally {
    unregister();
    await stopAll();
    removeCgroup(cg);
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Snapshot {
  treeKiB: number;
  treeKmemKiB: number;
  supervisors: number;
  supRssKiB: number[];
  supPrivKiB: number[];
  supPteKiB: number[];
  sandboxCgKiB: number[];
  sandboxKmemKiB: number[];
  runtimeRssKiB: number[];
  serverRssKiB: number;
}

function descendants(pid: number): number[] {
  const out: number[] = [];
  for (const c of childrenOf(pid)) out.push(c, ...descendants(c));
  return out;
}

function snapshot(s: BenchServer, memTree: string): Snapshot {
  const sups = childrenOf(s.pid).filter((p) => commOf(p) === 'zviz-supervisor');
  const snap: Snapshot = {
    treeKiB: charged(memTree).totalKiB,
    treeKmemKiB: charged(memTree).kmemKiB,
    supervisors: sups.length,
    supRssKiB: [],
    supPrivKiB: [],
    supPteKiB: [],
    sandboxCgKiB: [],
    sandboxKmemKiB: [],
    runtimeRssKiB: [],
    serverRssKiB: statusKiB(s.pid, 'VmRSS') ?? NaN,
  };
  for (const sup of sups) {
    snap.supRssKiB.push(statusKiB(sup, 'VmRSS') ?? NaN);
    snap.supPrivKiB.push(smapsRollup(sup)?.priv ?? NaN);
    snap.supPteKiB.push(statusKiB(sup, 'VmPTE') ?? NaN);
    for (const d of descendants(sup)) if (commOf(d) === 'node') snap.runtimeRssKiB.push(statusKiB(d, 'VmRSS') ?? NaN);
  }
  const zvizDir = join(memTree, 'zviz');
  let names: string[] = [];
  try {
    names = readdirNames(zvizDir).filter((n) => n.startsWith(sandboxCgroupPrefix(s.pid)));
  } catch {
    names = [];
  }
  for (const n of names) {
    const c = charged(join(zvizDir, n));
    snap.sandboxCgKiB.push(c.totalKiB);
    snap.sandboxKmemKiB.push(c.kmemKiB);
  }
  return snap;
}

function readdirNames(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name);
}

export interface WarmMemory {
  mode: 'deployed' | 'inline';
  cycles: number;
  runtime: RuntimeBaseline;
  supRssKiB: Summary;
  supPrivKiB: Summary;
  supPteKiB: Summary;
  sandboxCgKiB: Summary;
  sandboxKmemKiB: Summary;
  runtimeRssKiB: Summary;
  /** Supervisor private + PTE + (sandbox cgroup − plain runtime cgroup), per sandbox. */
  beyondKiB: number;
  /** Whole-tree: (full − empty) ÷ 8 − plain runtime cgroup, per sandbox; median over cycles. */
  treeBeyondKiB: number;
  treePerSandboxKiB: number[];
}

/** Fills a pool of 8 node sandboxes, measures, lets it shrink to nothing, measures; `cycles` times. */
export async function warmMemory(plan: CgroupPlan, cycles: number): Promise<WarmMemory> {
  const memRoot = ownMemoryCgroup(plan);
  if (!memRoot) throw new Error(`Cannot measure memory: this benchmark reads cgroup v1 memory files; the host's driver is ${plan.driver}`);
  const memTree = join(memRoot, `bench-${process.pid}`);
  mkdirSync(memTree);
  const removeTree = async (): Promise<void> => {
    // The server removed its zviz folder at shutdown (removeParents); ours goes now.
    try {
      rmdirSync(join(memTree, 'zviz'));
    } catch { // ENOENT: the server removed its folder already
    }
    removeCgroup(memTree);
  };
  // Registered first, so that on an abort it runs after the server's stop.
  const unregister = onAbort(removeTree);
  let s: BenchServer | null = null;
  try {
    // Pools shrink 2 s after their last claim: that gives the "none parked" state.
    s = await startBenchServer({ memoryCgroup: memTree, env: { ZVIZ_WARM_IDLE_MS: '2000' } });
    const t = await deploy(s, HELLO.node);
    const runtime = await plainRuntime(memRoot, t, POOL);
    const fulls: Snapshot[] = [];
    const perSandbox: number[] = [];
    for (let c = 0; c < cycles; c++) {
      await Promise.all(Array.from({ length: POOL }, () => invoke(s!, t)));
      const deadline = performance.now() + 1800;
      let size = 0;
      while ((size = await poolSize(s, t.poolPrefix)) < POOL && performance.now() < deadline) await sleep(25);
      if (size < POOL) {
        c--;
        await waitEmpty(s, t);
        continue;
      }
      await sleep(100);
      const full = snapshot(s, memTree);
      if (full.supervisors !== POOL) {
        // A creation or a release was still in flight: measure again next cycle.
        c--;
        await waitEmpty(s, t);
        continue;
      }
      await waitEmpty(s, t);
      const empty = snapshot(s, memTree);
      fulls.push(full);
      perSandbox.push((full.treeKiB - empty.treeKiB) / POOL);
    }
    const all = (pick: (x: Snapshot) => number[]): number[] => fulls.flatMap(pick);
    const supPriv = summarize(all((x) => x.supPrivKiB));
    const supPte = summarize(all((x) => x.supPteKiB));
    const sbCg = summarize(all((x) => x.sandboxCgKiB));
    const tree = summarize(perSandbox);
    return {
      mode: t.mode,
      cycles,
      runtime,
      supRssKiB: summarize(all((x) => x.supRssKiB)),
      supPrivKiB: supPriv,
      supPteKiB: supPte,
      sandboxCgKiB: sbCg,
      sandboxKmemKiB: summarize(all((x) => x.sandboxKmemKiB)),
      runtimeRssKiB: summarize(all((x) => x.runtimeRssKiB)),
      beyondKiB: supPriv.p50 + supPte.p50 + (sbCg.p50 - runtime.cgroupKiB),
      treeBeyondKiB: tree.p50 - runtime.cgroupKiB,
      treePerSandboxKiB: perSandbox,
    };
  } finally {
    await s?.stop();
    unregister();
    await removeTree();
  }
}

/** Until the pool is empty and every supervisor of the server has exited (at most 10 s). */
async function waitEmpty(s: BenchServer, t: Target): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (performance.now() < deadline) {
    const sups = childrenOf(s.pid).filter((p) => commOf(p) === 'zviz-supervisor').length;
    if (sups === 0 && (await poolSize(s, t.poolPrefix)) === 0) {
      await sleep(200);
      return;
    }
    await sleep(100);
  }
  throw new Error('The warm pool did not shrink to nothing within 10 s of its last claim');
}

export interface RssOverTime {
  invocations: number;
  concurrency: number;
  beforeKiB: number;
  afterKiB: number;
  /** After 3 s without requests. */
  settledKiB: number;
  samplesKiB: number[];
  redisBeforeKiB: number;
  redisAfterKiB: number;
  perSecond: number;
  /** Threads of the server process (main, libuv, V8, one per piscina worker) before and after. */
  threadsBefore: number;
  threadsAfter: number;
}

/** Server VmRSS before and after `n` invocations of inline bash `true` (`concurrency` clients). */
export async function rssOverInvocations(s: BenchServer, n: number, concurrency: number): Promise<RssOverTime> {
  const t: Target = {
    mode: 'inline',
    fn: { name: 'bash-true', runtime: 'bash', code: 'true', inline: 'true' },
    poolPrefix: 'inline:bash:default',
    body: () => ({ runtime: 'bash', code: 'true' }),
  };
  const run = async (count: number, every: number, samples: number[] | null): Promise<void> => {
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < count) {
          const i = next++;
          await invoke(s, t);
          if (samples && (i + 1) % every === 0) samples.push(statusKiB(s.pid, 'VmRSS') ?? NaN);
        }
      }),
    );
  };
  // Warm-up: JIT, pools, connections, worker threads, Redis keys all exist before
  // "before", which is read right after it, under the same load as "after".
  await run(Math.min(500, Math.max(100, n / 10)), n, null);
  const redis = s.redisPid();
  const beforeKiB = statusKiB(s.pid, 'VmRSS') ?? NaN;
  const threadsBefore = statusNumber(s.pid, 'Threads') ?? NaN;
  const redisBeforeKiB = redis ? (statusKiB(redis, 'VmRSS') ?? NaN) : NaN;
  const samples: number[] = [];
  const t0 = performance.now();
  await run(n, Math.max(1, Math.floor(n / 10)), samples);
  const elapsed = performance.now() - t0;
  const afterKiB = statusKiB(s.pid, 'VmRSS') ?? NaN;
  const threadsAfter = statusNumber(s.pid, 'Threads') ?? NaN;
  await sleep(3000);
  return {
    invocations: n,
    concurrency,
    beforeKiB,
    afterKiB,
    settledKiB: statusKiB(s.pid, 'VmRSS') ?? NaN,
    samplesKiB: samples,
    redisBeforeKiB,
    redisAfterKiB: redis ? (statusKiB(redis, 'VmRSS') ?? NaN) : NaN,
    perSecond: (n * 1000) / elapsed,
    threadsBefore,
    threadsAfter,
  };
}
