// One host lifecycle for every ZViz process that makes sandboxes (`zviz serve`, `zviz run`,
// the benchmarks): openHost() checks the host against the profiles, lays out /run/zviz,
// registers this process, prepares and sweeps the cgroup folders and (for egress profiles)
// layer E's table; Host.close() undoes what no other live ZViz process on the host needs.
//
// The order matters. Registration comes before any sweep or shared object, so that a
// sibling starting or stopping meanwhile counts us; what is shared (the `zviz` cgroup
// folders, a router namespace's nftables table) goes at close only when no live registered
// sibling uses it, since an idle sibling has no sandbox to show that it still needs it.
import { chmodSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Profile } from '../../profiles/schema.js';
import { dropTable, ensureTable, sweepNetwork, type NetworkHost } from '../network/index.js';
import type { HostLayout } from '../spec.js';
import type { HostFacts } from '../types.js';
import { killProcesses, prepareParents, removeParents, sweepCgroups, v2DelegationProblem, type CgroupPlan } from './cgroups.js';
import { NET_LOCK_DIR, ROOT_BASE, RUN_DIR, sandboxCgroup, sandboxCgroupPrefix } from './names.js';
import { processAlive } from './pids.js';
import { missingRequirements, probeHost } from './probe.js';
import { sweepImages } from '../images/store.js';
import { registerServer, sweepServerEntries, unregisterServer, unsharedParents, usesTable } from './registry.js';

export interface HostConfig {
  /** First host uid of the range sandbox ids map to (ZVIZ_UID_BASE). */
  uidBase: number;
  /** ZVIZ_NET_*: where egress sandboxes are routed. */
  net: Omit<NetworkHost, 'lockDir'>;
  /** The profiles sandboxes will follow: the host must fit each; egress among them sets up layer E. */
  profiles: Iterable<Profile>;
  /** ZVIZ_ALLOW_TEST_PROFILES: profiles with network mode `join` pass the check. */
  allowTestProfiles?: boolean;
  /** The image store's folder (worker-pool/images/): start-up removes what dead pulls left there. */
  imagesDir?: string;
  /** Where what start-up swept or found is said (a server's log); nothing when absent. */
  log?: HostLog;
}

/** What the host says; a server's Logger fits. */
export interface HostLog {
  warn(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * The host cannot run sandboxes. `lines` name each missing requirement and its fix
 * (`requirements`), or the one step of the set-up that failed (`setup`).
 */
export class HostError extends Error {
  override name = 'HostError';
  constructor(
    readonly kind: 'requirements' | 'setup',
    readonly lines: string[],
  ) {
    super(lines.join('\n'));
  }
}

export interface Host {
  readonly facts: HostFacts;
  readonly cgroupPlan: CgroupPlan;
  /** What the worker pool and the native spec need to put sandboxes on this host. */
  readonly layout: HostLayout;
  /** Whether layer E's table was set up (some profile gives egress). */
  readonly egress: boolean;
  /**
   * SIGKILLs what runs in this process's sandboxes — all of them, or the one of `sandboxId`
   * — killing each sandbox's init and with it its pid namespace. Their supervisors report
   * the invocations killed and clean up. Returns how many processes were signalled.
   */
  killSandboxes(sandboxId?: string): number;
  /**
   * Removes what this process left (cgroup folders a killed supervisor could not remove),
   * unregisters it, and, when no other live ZViz process remains that uses them, the `zviz`
   * cgroup folders and the nftables table. Call it once no sandbox of ours runs; idempotent.
   */
  close(): void;
}

/** Probes the host and checks it against the profiles; throws HostError naming what is missing. */
export function checkHost(config: Pick<HostConfig, 'profiles' | 'allowTestProfiles'>): { facts: HostFacts; cgroupPlan: CgroupPlan } {
  let probed: ReturnType<typeof probeHost>;
  try {
    probed = probeHost();
  } catch (e) {
    throw new HostError('requirements', [errorText(e)]);
  }
  const missing = missingRequirements(probed.facts, config.profiles, { allowTestProfiles: config.allowTestProfiles });
  const delegation = v2DelegationProblem(probed.cgroupPlan);
  if (delegation) missing.push(delegation);
  if (missing.length > 0) throw new HostError('requirements', missing);
  return probed;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Makes /run/zviz/root; the sandbox's unprivileged setup uid must traverse both folders. */
function layOutRunDir(): void {
  try {
    mkdirSync(ROOT_BASE, { recursive: true, mode: 0o755 });
    for (const dir of [RUN_DIR, ROOT_BASE]) chmodSync(dir, 0o755);
  } catch (e) {
    throw new HostError('setup', [`Cannot create ${ROOT_BASE}: ${errorText(e)}`]);
  }
}

export function openHost(config: HostConfig): Host {
  const profiles = [...config.profiles];
  const { facts, cgroupPlan } = checkHost({ ...config, profiles });
  const log = config.log;
  if (facts.landlock.unenforced.length > 0) {
    log?.warn('Landlock cannot enforce every right on this kernel', { abi: facts.landlock.abi, unenforced: facts.landlock.unenforced });
  }
  layOutRunDir();
  const egress = profiles.some((p) => p.network.mode === 'egress');
  const netHost: NetworkHost = { ...config.net, lockDir: NET_LOCK_DIR };

  registerServer(egress ? { egress: { router: netHost.routerNetns } } : {});
  let closed = false;
  const host: Host = {
    facts,
    cgroupPlan,
    layout: {
      rootBase: ROOT_BASE,
      uidBase: config.uidBase,
      cgroup: cgroupPlan.driver === 'none' ? null : { version: cgroupPlan.driver === 'v2' ? 2 : 1, parents: cgroupPlan.parents },
      network: netHost,
    },
    egress,
    killSandboxes(sandboxId?: string): number {
      const prefix = sandboxId === undefined ? sandboxCgroupPrefix() : null;
      let signalled = 0;
      for (const p of cgroupPlan.parents) {
        let names: string[];
        try {
          names = prefix === null ? [sandboxCgroup(sandboxId!)] : readdirSync(p.parent).filter((n) => n.startsWith(prefix));
        } catch {
          continue; // no folder yet: no sandbox of ours in this hierarchy
        }
        for (const name of names) signalled += killProcesses(join(p.parent, name)).length;
      }
      return signalled;
    },
    close(): void {
      if (closed) return;
      closed = true;
      // No sandbox of ours exists now: a folder of ours still here is one a killed
      // supervisor could not remove. Swept like a dead predecessor's.
      const ours = sweepCgroups(cgroupPlan, (pid) => pid !== process.pid && processAlive(pid));
      if (ours.removed.length > 0 || ours.killed.length > 0) log?.warn('removed sandbox cgroups their supervisors left', { ...ours });
      const others = unregisterServer(processAlive);
      removeParents(unsharedParents(cgroupPlan, processAlive));
      if (egress && !others.some((r) => usesTable(r, netHost.routerNetns))) dropTable(netHost);
    },
  };

  try {
    const gone = sweepServerEntries(processAlive);
    if (gone.length > 0) log?.warn('dropped the registration of servers that are gone', { pids: gone });
    if (config.imagesDir !== undefined) {
      const half = sweepImages(config.imagesDir, processAlive);
      if (half.length > 0) log?.warn('removed image pulls a previous process left unfinished', { removed: half });
    }
    try {
      prepareParents(cgroupPlan);
      const swept = sweepCgroups(cgroupPlan, processAlive);
      if (swept.removed.length > 0 || swept.killed.length > 0) log?.warn('swept leftovers of a previous server', { ...swept });
    } catch (e) {
      const where = cgroupPlan.parents.map((p) => p.parent).join(', ');
      throw new HostError('setup', [`Cannot prepare cgroups under ${where}: ${errorText(e)}`]);
    }
    // Layer E: a dead predecessor's namespaces and veths go in any case; the table is made
    // only where some profile gives egress (mode "none" needs nothing on the host).
    try {
      const swept = sweepNetwork(netHost, processAlive);
      if (swept.removed.length > 0) log?.warn('swept network leftovers of a previous server', { removed: swept.removed });
      if (egress) ensureTable(netHost);
    } catch (e) {
      const where = config.net.routerNetns ? ` in namespace ${config.net.routerNetns}` : '';
      throw new HostError('setup', [`Cannot prepare sandbox networking${where}: ${errorText(e)}`]);
    }
  } catch (e) {
    host.close();
    throw e;
  }
  return host;
}
