// The host work around a sandbox that must not run on the event loop of a busy server:
// its egress network (setup and teardown run `ip` and `nft` to completion, spawnSync in
// network/plumbing.ts) and the encoding of its spec. The functions here are synchronous;
// HostWork says where they run. `zviz run` runs them in place (inlineHostWork: it has
// nothing else to do meanwhile); the server's pool hands them to a piscina worker
// (pool.ts, worker.ts). A sandbox without egress has no network work at all, so its warm
// path never leaves the event loop.
import { networkDrops, removeNetwork, setupNetwork, teardownNetwork, type NetworkInfo } from './network/index.js';
import { encodeSpec, type HostLayout } from './spec.js';
import type { SandboxTask } from './task.js';
import type { AuditEvent } from './types.js';

/** A sandbox's spec, ready for the supervisor, and the network made for it (null: none on the host). */
export interface Prepared {
  spec: Uint8Array;
  net: NetworkInfo | null;
}

/** Where a sandbox's blocking host work runs. */
export interface HostWork {
  /** Makes the sandbox's network (egress) and encodes its spec. */
  prepare(task: SandboxTask, sandboxId: string, warm: boolean): Promise<Prepared>;
  /** Reads the drops recorded for a sandbox's network, then removes it. */
  endNetwork(net: NetworkInfo): Promise<AuditEvent[]>;
  /** Removes a sandbox's network without reading it. */
  removeNetwork(net: NetworkInfo): Promise<void>;
}

export function prepareSandbox(task: SandboxTask, host: HostLayout, sandboxId: string, warm: boolean): Prepared {
  // A reusable environment runs its bootstrap in serve mode; a warm sandbox in handler mode.
  const template = task.reuse?.template ?? task.warm?.template;
  const spec = warm && template ? { ...task, ...template } : task;
  const net = setupNetwork(host.network, sandboxId, task.profile.network);
  try {
    return { spec: encodeSpec(spec, sandboxId, host, net, warm), net: net.info };
  } catch (e) {
    teardownNetwork(host.network, net.info);
    throw e;
  }
}

export function endNetwork(host: HostLayout, net: NetworkInfo): AuditEvent[] {
  const drops = networkDrops(host.network, net);
  removeNetwork(host.network, net);
  return drops;
}

/** The host work done in place, on the calling thread (`zviz run`). */
export function inlineHostWork(host: HostLayout): HostWork {
  return {
    prepare: async (task, id, warm) => prepareSandbox(task, host, id, warm),
    endNetwork: async (net) => endNetwork(host, net),
    removeNetwork: async (net) => removeNetwork(host.network, net),
  };
}
