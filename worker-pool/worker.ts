// The piscina worker: the host work of a sandbox that must leave the server's event loop
// (host-work.ts: egress network setup and teardown run `ip` and `nft` to completion;
// spec encoding is CPU). Waiting on sandboxes is not done here: the pool waits on them
// from the event loop (sandbox.ts). Jobs are plain objects in and out; errors travel as
// data, never as thrown custom classes (piscina #141).
import { workerData } from 'node:worker_threads';
import { endNetwork, prepareSandbox, type Prepared } from './host-work.js';
import { removeNetwork } from './network/index.js';
import type { HostLayout } from './spec.js';
import type { HostJob, HostJobResult } from './types.js';
import { errorMessage } from './util/errors.js';

/** piscina entry point. */
export default function job(j: HostJob): HostJobResult {
  const host = (workerData as { host: HostLayout }).host;
  try {
    switch (j.kind) {
      case 'prepare': {
        const p: Prepared = prepareSandbox(j.task, host, j.sandboxId, j.warm);
        return { ok: true, prepared: p };
      }
      case 'end-network':
        return { ok: true, drops: endNetwork(host, j.net) };
      case 'remove-network':
        removeNetwork(host.network, j.net);
        return { ok: true };
    }
  } catch (e) {
    return { ok: false, message: errorMessage(e) };
  }
}
