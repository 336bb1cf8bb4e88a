// Item 2 breakdown: a warm invocation without HTTP and Redis, and without piscina. worker-pool/pool.ts's
// SandboxPool runs in this process, with the host layout server/main.ts builds, and
// invokes a deployed node hello the way server/invocation/service.ts prepares one (the handler
// bootstrap, the default profile): what is left of the HTTP latency is the server's own
// path (HTTP, auth, Redis quota, function lookup and accounting).
import { performance } from 'node:perf_hooks';
import * as native from '../worker-pool/native.js';
import { SandboxPool } from '../worker-pool/pool.js';
import { encodeGo, encodeSpec } from '../worker-pool/spec.js';
import { handlerTask, type SandboxTask } from '../worker-pool/task.js';
import { DEFAULT_WARM } from '../worker-pool/warm.js';
import { defaultProfile } from './bench-cold.js';
import type { Host } from '../worker-pool/host/index.js';
import { HELLO, invoke, type BenchServer, type Target } from './bench-server.js';
import { onAbort, sleep, summarize, type Summary } from './bench-util.js';
import { PAUSE_MS } from './bench-http.js';

export interface PoolLevel {
  total: number;
  warm: number;
  /** The HTTP requests interleaved with them (warm ones), same function, same moments. */
  http: { total: number; warm: number; latency: Summary; durationMs: Summary };
  /** SandboxPool.invoke() wall time of the warm ones: piscina hop, native run (GO → RESULT), release. */
  latency: Summary;
  /** The supervisor's durationMs of the same ones (GO → the function's exit). */
  durationMs: Summary;
}

/** A deployed node hello as server/invocation/service.ts prepares one: the handler bootstrap, the default profile. */
function helloTask(i: number): SandboxTask {
  const profile = defaultProfile();
  const fn = { tenant: 'bench', name: HELLO.node.name, version: 1, runtime: 'node' as const, files: { 'index.js': HELLO.node.code }, handler: 'index.js', env: {} };
  const id = `bench-pool-${i}`;
  const limits = { ...profile.limits.defaults };
  const context = { invocationId: id, function: fn.name, version: 1, tenant: 'bench', deadlineMs: Date.now() + limits.timeoutMs };
  return handlerTask({ id, fn, event: { name: 'bench' }, context, limits, profile });
}

/**
 * (a) at the pool level, interleaved with the same requests over HTTP so that both see the
 * same background load: HTTP invoke, 50 ms, SandboxPool.invoke(), 50 ms, … after a
 * warm-up at the same pace. Each path has its own warm pool.
 */
export async function poolVersusHttp(opened: Host, s: BenchServer, t: Target, n: number, warmupMs: number): Promise<PoolLevel> {
  const pool = new SandboxPool({ host: opened.layout, maxSandboxes: 8, maxQueue: 64, warm: DEFAULT_WARM });
  const unregister = onAbort(() => pool.close());
  let i = 0;
  try {
    const one = async (): Promise<{ ms: number; warm: boolean; durationMs: number }> => {
      const t0 = performance.now();
      const out = await pool.invoke(helloTask(i++));
      const ms = performance.now() - t0;
      if (!out.ok || out.result.exitCode !== 0 || !(out.result.reply ?? '').includes('hello, ')) {
        throw new Error(`pool-level hello failed: ${JSON.stringify(out).slice(0, 600)}`);
      }
      return { ms, warm: out.result.warm, durationMs: out.result.durationMs };
    };
    const pair = async (): Promise<[Awaited<ReturnType<typeof invoke>>, Awaited<ReturnType<typeof one>>]> => {
      const h = await invoke(s, t);
      await sleep(PAUSE_MS);
      const p = await one();
      await sleep(PAUSE_MS);
      return [h, p];
    };
    const until = performance.now() + warmupMs;
    while (performance.now() < until) await pair();
    const viaHttp: Array<Awaited<ReturnType<typeof invoke>>> = [];
    const inProcess: Array<Awaited<ReturnType<typeof one>>> = [];
    for (let k = 0; k < n; k++) {
      const [h, p] = await pair();
      viaHttp.push(h);
      inProcess.push(p);
    }
    const warm = inProcess.filter((g) => g.warm);
    const hw = viaHttp.filter((g) => g.warm);
    return {
      total: inProcess.length,
      warm: warm.length,
      latency: summarize(warm.map((g) => g.ms)),
      durationMs: summarize(warm.map((g) => g.durationMs)),
      http: {
        total: viaHttp.length,
        warm: hw.length,
        latency: summarize(hw.map((g) => g.ms)),
        durationMs: summarize(hw.map((g) => g.durationMs)),
      },
    };
  } finally {
    unregister();
    await pool.close();
  }
}

export interface NativeFloor {
  n: number;
  /** native.run + native.release of a parked warm sandbox, on this thread. */
  total: Summary;
  run: Summary;
  release: Summary;
  durationMs: Summary;
}

/**
 * The floor of a warm invocation with today's native layer: warm deployed-node-hello
 * sandboxes are made first (in batches of 10, then 1 s of quiet), then each is run and
 * released on this thread, 50 ms apart — no piscina hop, no refill competing for the CPU.
 */
export async function nativeWarmFloor(opened: Host, n: number): Promise<NativeFloor> {
  const host = opened.layout;
  const total: number[] = [];
  const run: number[] = [];
  const release: number[] = [];
  const durationMs: number[] = [];
  for (let done = 0; done < n; ) {
    const batch = Math.min(10, n - done);
    const parked: Array<{ sb: native.SandboxHandle; task: SandboxTask }> = [];
    const unregister = onAbort(() => {
      for (const p of parked) native.release(p.sb);
    });
    try {
      for (let k = 0; k < batch; k++) {
        const task = helloTask(done + k);
        const spec = encodeSpec({ ...task, ...task.warm!.template }, `${process.pid}-bench-floor-${done + k}`, host, undefined, true);
        parked.push({ sb: native.spawn(spec), task });
      }
      await sleep(1000);
      for (const { sb, task } of parked) {
        const t0 = performance.now();
        const out = native.run(sb, task.limits.outputBytes, encodeGo(task, Buffer.from(task.warm!.control)));
        const t1 = performance.now();
        native.release(sb);
        const t2 = performance.now();
        if (out.raw.exit_code !== 0 || !out.reply.toString().includes('hello, ')) {
          throw new Error(`warm floor hello failed: exit ${out.raw.exit_code}, reply ${out.reply.toString().slice(0, 300)}`);
        }
        total.push(t2 - t0);
        run.push(t1 - t0);
        release.push(t2 - t1);
        durationMs.push(Number(out.raw.duration_ns) / 1e6);
        await sleep(PAUSE_MS);
      }
    } finally {
      for (const p of parked) native.release(p.sb);
      unregister();
    }
    done += batch;
  }
  return { n, total: summarize(total), run: summarize(run), release: summarize(release), durationMs: summarize(durationMs) };
}
