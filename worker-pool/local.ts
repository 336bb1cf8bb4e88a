// One sandbox on the calling thread, for a one-off local run (`zviz run`): no worker pool.
// A pool pays for a worker thread that boots and compiles the modules again before the
// first sandbox; a command-line tool that makes one sandbox has nothing to gain from it.
// Setup, the end of the run and teardown are the same functions a pool worker calls
// (worker.ts: makeSandbox, settleRun, releaseSandbox), so every layer applies exactly as it
// does there; only the wait for the result differs: it runs on koffi's thread
// (native.runAsync), so the event loop still sees ^C and streams output.
import * as native from './native.js';
import { sandboxId } from './host/names.js';
import { encodeGo, type HostLayout } from './spec.js';
import type { SandboxTask } from './task.js';
import type { OutputChunk, ParkedSandbox, SandboxOutcome } from './types.js';
import { failure, makeSandbox, releaseSandbox, settleRun } from './worker.js';

/**
 * Makes, runs and removes the sandbox of a cold task without leaving this thread. The
 * command's one sandbox is torn down before this returns: the caller closes the host next.
 */
export async function runLocal(task: SandboxTask, host: HostLayout, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome> {
  // A deployed function always runs through its bootstrap (the handler contract).
  const viaBootstrap = task.warm?.handler === true;
  let parked: ParkedSandbox;
  try {
    parked = makeSandbox(task, host, viaBootstrap, sandboxId(task.id));
  } catch (e) {
    return failure(e);
  }
  const control = viaBootstrap && task.warm ? Buffer.from(task.warm.control) : null;
  let ran: { out: native.RunOutput } | { error: unknown };
  try {
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
    ran = { out };
  } catch (e) {
    ran = { error: e };
  }
  const { outcome, teardown } = settleRun(ran, parked, task, host, viaBootstrap);
  if (teardown) releaseSandbox(teardown, host);
  if (outcome.ok) {
    outcome.result.warm = false;
    outcome.result.setupMs = parked.setupMs;
  }
  return outcome;
}
