// Issue 15's server memory row: the server's VmRSS and thread count while `n` sandboxes
// run at once (inline bash `sleep`, warm pools off, ZVIZ_MAX_SANDBOXES = n, so each is a
// sandbox made for its invocation and none waits). Sampled every 5 ms from the first
// request to the last answer, against the same server idle just before. Also runnable
// alone, for a comparison with another build of the server:
//   node dist/load-tests/bench-concurrent.js [n]
import { startBenchServer } from './bench-server.js';
import { sleep, statusKiB, statusNumber } from './bench-util.js';
import { sleepingSandboxes } from '../test/support/sandboxes.js';
import { isEntryPoint } from '../worker-pool/util/entry-point.js';

export interface Concurrent {
  n: number;
  idleRssKiB: number;
  idleThreads: number;
  peakRssKiB: number;
  peakThreads: number;
  /** Most sandboxes seen running `sleep` at the same moment. */
  peakRunning: number;
  /** Answers with status ok. */
  ok: number;
}

export async function concurrentSandboxes(n: number, sleepS = 8): Promise<Concurrent> {
  const s = await startBenchServer({ env: { ZVIZ_MAX_SANDBOXES: String(n), ZVIZ_WARM_MAX: '0' } });
  try {
    // One invocation first, so that what every server has after its first (the host-work
    // worker, the modules of the invocation path) is in the idle figures.
    await s.request('POST', '/invoke', { runtime: 'bash', code: 'true' });
    await sleep(1000);
    const idleRssKiB = statusKiB(s.pid, 'VmRSS') ?? 0;
    const idleThreads = statusNumber(s.pid, 'Threads') ?? 0;
    let peakRssKiB = idleRssKiB;
    let peakThreads = idleThreads;
    let peakRunning = 0;
    let inFlight = true;
    let tick = 0;
    const sampler = (async () => {
      while (inFlight) {
        peakRssKiB = Math.max(peakRssKiB, statusKiB(s.pid, 'VmRSS') ?? 0);
        peakThreads = Math.max(peakThreads, statusNumber(s.pid, 'Threads') ?? 0);
        // Walking /proc costs more than the status file: every 20th sample.
        if (tick++ % 20 === 0) peakRunning = Math.max(peakRunning, sleepingSandboxes(s.pid));
        await sleep(5);
      }
    })();
    const body = { runtime: 'bash', code: `exec sleep ${sleepS}`, limits: { timeoutMs: 60_000 } };
    const replies = await Promise.all(Array.from({ length: n }, () => s.request('POST', '/invoke', body)));
    inFlight = false;
    await sampler;
    const ok = replies.filter((r) => r.status === 200 && r.body?.status === 'ok').length;
    return { n, idleRssKiB, idleThreads, peakRssKiB, peakThreads, peakRunning, ok };
  } finally {
    await s.stop();
  }
}

if (isEntryPoint(import.meta.url)) {
  const n = Number(process.argv[2] ?? 32);
  const r = await concurrentSandboxes(n);
  console.log(JSON.stringify({ ...r, idleRssMiB: +(r.idleRssKiB / 1024).toFixed(1), peakRssMiB: +(r.peakRssKiB / 1024).toFixed(1) }));
}
