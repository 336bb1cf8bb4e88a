// One sandbox on the calling thread, for a one-off local run (`zviz run`): no worker pool.
// A pool pays for a worker thread that boots and compiles the modules again before the
// first sandbox; a command-line tool that makes one sandbox has nothing to gain from it.
// Setup and teardown are the same functions a pool worker calls (worker.ts), so every
// layer applies exactly as it does there; only the wait for the result differs: it runs
// on koffi's thread (native.runAsync), so the event loop still sees ^C and streams output.
import * as native from './native.js';
import { sandboxId } from './host/names.js';
import { encodeGo, type HostLayout } from './spec.js';
import type { SandboxTask } from './task.js';
import type { OutputChunk, ParkedSandbox, SandboxOutcome } from './types.js';
import { failure, makeSandbox, releaseSandbox, toOutcome } from './worker.js';

/** Makes, runs and removes the sandbox of a cold task without leaving this thread. */
export async function runLocal(task: SandboxTask, host: HostLayout, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome> {
  // A deployed function always runs through its bootstrap (the handler contract).
  const viaBootstrap = task.warm?.handler === true;
  let parked: ParkedSandbox;
  try {
    parked = makeSandbox(task, host, viaBootstrap, sandboxId(task.id));
  } catch (e) {
    return failure(e);
  }
  let released = false;
  try {
    const control = viaBootstrap && task.warm ? Buffer.from(task.warm.control) : null;
    const out = await native.runAsync(
      parked.handle as native.SandboxHandle,
      task.limits.outputBytes,
      encodeGo(task, control, onOutput !== undefined),
      onOutput
        ? (stream, data) => {
            onOutput({ stream, data });
            return true;
          }
        : null,
    );
    const netAudit = releaseSandbox(parked, host).drops;
    released = true;
    const outcome = toOutcome(out, parked, task, viaBootstrap, netAudit);
    if (outcome.ok) {
      outcome.result.warm = false;
      outcome.result.setupMs = parked.setupMs;
    }
    return outcome;
  } catch (e) {
    // As in the pool's worker: what the function used before the native layer failed is reported.
    released = true;
    const { leftCpuMs: cpuMs } = releaseSandbox(parked, host);
    return { ...failure(e), cpuMs };
  } finally {
    if (!released) releaseSandbox(parked, host);
  }
}
