// Item 8: reusable environments (a deployed function with `reuse`). Sequential HTTP
// latency of a reused hello against GET /healthz interleaved with it (the HTTP floor of the
// same server at the same moment), sustained throughput of 8 clients against the
// single-use ceiling, and the CPU the server and the trusted side spend per reused
// invocation beyond the runtime's own.
import { performance } from 'node:perf_hooks';
import { HELLO, invoke, type BenchServer, type Target } from './bench-server.js';
import { procTimes, sleep, summarize, type Summary } from './bench-util.js';

export interface ReuseSeq {
  /** Client latency of reused invocations (invocationIndex > 1). */
  latency: Summary;
  /** GET /healthz, interleaved one for one with the invocations. */
  healthz: Summary;
  reused: number;
  total: number;
}

export interface ReuseThroughput {
  seconds: number;
  concurrency: number;
  completed: number;
  reused: number;
  perSecond: number;
  latency: Summary;
  /** Per invocation, ms: the server process itself (HTTP, auth, Redis client, piscina, koffi). */
  serverSelfCpuMs: number;
  /** Per invocation: the supervisor, which answers the notifications too (brokerCpuMs of the responses). */
  trustedCpuMs: number;
  /** Per invocation: the runtime in its cgroup during the invocation (cpuMs: the handler and its bootstrap's framing). */
  sandboxCpuMs: number;
}

const REUSE = { maxInvocations: 100_000, idleMs: 600_000, reset: 'tmp' };

/** Deploys a hello function with reuse; its invocations say reused / invocationIndex. */
export async function deployReused(s: BenchServer, rt: 'node' | 'python'): Promise<Target> {
  const fn = { ...HELLO[rt], name: `${HELLO[rt].name}-reused` };
  const r = await s.request('PUT', `/functions/${fn.name}`, { runtime: fn.runtime, code: fn.code, reuse: REUSE });
  if (r.status !== 201) throw new Error(`Cannot deploy ${fn.name} with reuse: ${r.status} ${JSON.stringify(r.body)}`);
  return { mode: 'deployed', fn, poolPrefix: `env:${s.tenant}:${fn.name}:`, body: (input) => ({ function: fn.name, input }) };
}

/** One reused invocation with the fields the rows need. */
async function invokeReused(s: BenchServer, t: Target): Promise<{ ms: number; reused: boolean; cpuMs: number; brokerCpuMs: number }> {
  const t0 = performance.now();
  const r = await s.request('POST', '/invoke', t.body({ name: 'bench' }));
  const ms = performance.now() - t0;
  if (r.status !== 200 || r.body?.status !== 'ok' || !JSON.stringify(r.body.output).includes('hello, ')) {
    throw new Error(`${t.fn.name} answered ${r.status}: ${JSON.stringify(r.body).slice(0, 600)}`);
  }
  return { ms, reused: r.body.reused === true, cpuMs: r.body.cpuMs, brokerCpuMs: r.body.brokerCpuMs };
}

/** (a) one request at a time, each followed by one GET /healthz, 50 ms apart. */
export async function reusedSequential(s: BenchServer, t: Target, n: number): Promise<ReuseSeq> {
  for (let i = 0; i < 20; i++) await invoke(s, t); // warm-up: the environment exists and is hot
  const lat: number[] = [];
  const floor: number[] = [];
  let reused = 0;
  for (let i = 0; i < n; i++) {
    const r = await invokeReused(s, t);
    if (r.reused) {
      reused++;
      lat.push(r.ms);
    }
    await sleep(25);
    const h = await s.request('GET', '/healthz');
    if (h.status !== 200) throw new Error(`GET /healthz answered ${h.status}`);
    floor.push(h.ms);
    await sleep(25);
  }
  return { latency: summarize(lat), healthz: summarize(floor), reused, total: n };
}

/** (b) closed loop: `concurrency` clients, each invoking again as soon as its answer arrives. */
export async function reusedThroughput(s: BenchServer, t: Target, seconds: number, concurrency: number): Promise<ReuseThroughput> {
  const warmEnd = performance.now() + 2000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < warmEnd) await invokeReused(s, t);
  }));
  const srv0 = procTimes(s.pid).selfMs;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const done: Array<{ ms: number; reused: boolean; cpuMs: number; brokerCpuMs: number }> = [];
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) done.push(await invokeReused(s, t));
  }));
  const elapsed = performance.now() - t0;
  const n = done.length;
  const sum = (f: (d: (typeof done)[number]) => number): number => done.reduce((a, d) => a + f(d), 0);
  return {
    seconds: elapsed / 1000,
    concurrency,
    completed: n,
    reused: done.filter((d) => d.reused).length,
    perSecond: (n * 1000) / elapsed,
    latency: summarize(done.map((d) => d.ms)),
    serverSelfCpuMs: (procTimes(s.pid).selfMs - srv0) / n,
    trustedCpuMs: sum((d) => d.brokerCpuMs) / n,
    sandboxCpuMs: sum((d) => d.cpuMs) / n,
  };
}
