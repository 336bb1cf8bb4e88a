// One sandbox on the calling thread, for a one-off local run (`zviz run`): no worker pool.
// A pool pays for a worker thread that boots and compiles the modules again before the
// first sandbox; a command-line tool that makes one sandbox has nothing to gain from it.
// The sandbox's life is the one the server's pool gives it (sandbox.ts: makeSandbox,
// runParked, settleRun, releaseSandbox), so every layer applies exactly as it does there;
// only its host work (egress network, spec encoding) runs in place (inlineHostWork).
import { inlineHostWork } from './host-work.js';
import type { HostLayout } from './spec.js';
import type { SandboxTask } from './task.js';
import type { OutputChunk, SandboxOutcome } from './types.js';
import { releaseSandbox, runTask } from './sandbox.js';

/**
 * Makes, runs and removes the sandbox of a cold task without leaving this thread. The
 * command's one sandbox is torn down before this returns: the caller closes the host next.
 */
export async function runLocal(task: SandboxTask, layout: HostLayout, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome> {
  const host = { layout, work: inlineHostWork(layout) };
  const { outcome, teardown } = await runTask(task, host, onOutput ?? null);
  if (teardown) await releaseSandbox(teardown, host);
  return outcome;
}
