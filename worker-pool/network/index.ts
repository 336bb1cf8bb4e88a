// Layer E: per-invocation network namespace and nftables egress policy.
//
// mode "none" (default): the sandbox gets its own network namespace with only `lo`
// (made by the supervisor, owned by the sandbox's user namespace: nothing can leave it).
//
// mode "egress": ZViz makes a named namespace `zviz-<sandbox id>` owned by the host's
// user namespace — the sandbox has no CAP_NET_ADMIN there, so it cannot change its own
// addresses, routes or rules — with a veth pair: `eth0` inside, `zvs<index>` in the
// router namespace (the host's, or ZVIZ_NET_ROUTER_NETNS). ZViz's nftables table
// `inet zviz` in the router namespace holds, per sandbox, exactly the profile's
// allowlist; everything else — the router's own addresses, loopback, other sandboxes,
// link-local and metadata ranges, IPv6, any destination not listed — is dropped and
// recorded in a per-sandbox set that becomes the result's audit entries. Rules are
// installed in one nft transaction before the sandbox is created and removed with the
// namespace after it ends.
//
// ZViz never enables forwarding. NAT toward an uplink (ZVIZ_NET_UPLINK) is an operator's
// production setting; without it nothing is masqueraded.
//
// This file is the lifecycle (setup, teardown, the host's table, the sweeps); the pool of
// /31 pairs is address-pool.ts, the rules are ruleset.ts, the commands plumbing.ts.
import { NETNS_DIR, NFT_FAMILY, NFT_TABLE_NAME, netnsName, netnsOwner, nftChainIndex, nftNames, vethIndex, vethName } from '../host/names.js';
import type { AuditEvent } from '../types.js';
import { claimIndex, claims, pairFor, reclaimIfStale, releaseIndex } from './address-pool.js';
import { createPair, deleteNetns, deleteVeth, namedNetns, nft, routerLinks, type Router } from './plumbing.js';
import { dropAudit, dropSetNames, removalCommands, resolvConf, sandboxRules, tableScript, type NetworkProfile } from './ruleset.js';

export type { NetworkProfile } from './ruleset.js';

export interface NetworkHost extends Router {
  /** IPv4 pool sandboxes get /31 pairs from, e.g. "10.199.0.0/16". */
  pool: string;
  /** Interface to masquerade egress on (production only); null: no NAT. */
  uplink: string | null;
  /** Directory of allocation lock files (host-wide, shared by every server). */
  lockDir: string;
}

/** What was made for one sandbox, as plain data: it may be torn down by another thread. */
export interface NetworkInfo {
  index: number;
  ns: string;
  rules: boolean;
}

export interface SandboxNetwork {
  /** Path of the namespace the supervisor joins, or null for a private one. */
  netnsPath: string | null;
  /** Content of the sandbox's /etc/resolv.conf. */
  resolvConf: string;
  /** null when nothing was made on the host (modes none and join). */
  info: NetworkInfo | null;
}

const TABLE_ARGS = [NFT_FAMILY, NFT_TABLE_NAME];

/** Whether the `inet zviz` table exists in the router's namespace. */
export function tableExists(host: Router): boolean {
  try {
    nft(host, ['list', 'table', ...TABLE_ARGS]);
    return true;
  } catch {
    return false; // absent (or no nft: then nothing of ours is there either)
  }
}

/** The `inet zviz` table with its base chains; made once, left as it is if present. */
export function ensureTable(host: NetworkHost): void {
  // Present: a sibling server (or a predecessor, swept before) made it.
  if (!tableExists(host)) nft(host, ['-f', '-'], tableScript(host.pool, host.uplink));
}

/** Removes the table unless some sandbox of any server on this host still holds a pair. */
export function dropTable(host: NetworkHost): void {
  if (claims(host.lockDir).length > 0) return;
  try {
    nft(host, ['delete', 'table', ...TABLE_ARGS]);
  } catch { // the table is absent already: nothing to remove
  }
}

/**
 * Removes a pair's rules: one transaction, or, if that fails (something was already
 * gone, or made by an older version), each command on its own.
 */
function removeRules(host: Router, index: number): void {
  const commands = removalCommands(index);
  try {
    nft(host, ['-f', '-'], commands.join('\n') + '\n');
  } catch {
    for (const line of commands) {
      try {
        nft(host, ['-f', '-'], `${line}\n`);
      } catch { // this part was not there (removed before, or never made): the others still go
      }
    }
  }
}

/** Dropped destinations recorded in the sandbox's sets, as audit events. */
function readDrops(host: Router, index: number): AuditEvent[] {
  const sets: Array<{ name: string; json: unknown }> = [];
  for (const name of dropSetNames(index)) {
    try {
      sets.push({ name, json: JSON.parse(nft(host, ['-j', 'list', 'set', ...TABLE_ARGS, name])) });
    } catch { // a set that is not there recorded no drop
    }
  }
  return dropAudit(sets);
}

let nextHint = Math.floor(Math.random() * 1024);

/** The drops recorded for one sandbox so far, as audit events (read at its answer). */
export function networkDrops(host: NetworkHost | null, info: NetworkInfo | null): AuditEvent[] {
  return host && info?.rules ? readDrops(host, info.index) : [];
}

/**
 * Removes what setupNetwork made for one sandbox (after its supervisor is gone) and
 * returns the drops recorded for it as audit events.
 */
export function teardownNetwork(host: NetworkHost | null, info: NetworkInfo | null): AuditEvent[] {
  const drops = networkDrops(host, info);
  removeNetwork(host, info);
  return drops;
}

/** Removes what setupNetwork made for one sandbox, after its supervisor is gone. */
export function removeNetwork(host: NetworkHost | null, info: NetworkInfo | null): void {
  if (!host || !info) return;
  if (info.rules) removeRules(host, info.index);
  // The veth first, explicitly: deleting a namespace frees its devices asynchronously,
  // and the /31 pair must not be claimed again while the old router end still exists.
  deleteVeth(host, info.index);
  deleteNetns(info.ns); // what stays is swept at the next start
  releaseIndex(host.lockDir, info.index);
}

/**
 * Prepares the sandbox's network before its supervisor starts. For mode "none" nothing
 * is made here (the supervisor creates a private namespace with only `lo`).
 */
export function setupNetwork(host: NetworkHost | null, sandboxId: string, net: NetworkProfile): SandboxNetwork {
  if (net.mode === 'none') return { netnsPath: null, resolvConf: '', info: null };
  if (net.mode === 'join') {
    // Test-only: join a namespace someone else made and owns; nothing to tear down.
    return { netnsPath: `${NETNS_DIR}/${net.netns}`, resolvConf: '', info: null };
  }
  if (!host) throw new Error('Cannot give a sandbox egress: the host network is not configured');
  const index = claimIndex(host, nextHint++);
  const info: NetworkInfo = { index, ns: netnsName(sandboxId), rules: false };
  const { outer, inner } = pairFor(host.pool, index);
  try {
    createPair(host, info.ns, index, outer, inner);
    nft(host, ['-f', '-'], sandboxRules(index, net));
    info.rules = true;
  } catch (e) {
    teardownNetwork(host, info);
    throw e;
  }
  return { netnsPath: `${NETNS_DIR}/${info.ns}`, resolvConf: resolvConf(net), info };
}

/** Removes namespaces, veths, chains and lock files of servers that are gone. */
export function sweepNetwork(host: NetworkHost, isAlive: (pid: number) => boolean): { removed: string[] } {
  const removed: string[] = [];
  for (const name of namedNetns()) {
    const owner = netnsOwner(name);
    if (owner === null || isAlive(owner)) continue;
    if (deleteNetns(name)) removed.push(`netns ${name}`);
  }
  for (const { index, owner } of claims(host.lockDir)) {
    // null: released while we looked; 0: a claim being written (never a dead owner's).
    if (owner === null || owner === 0 || isAlive(owner)) continue;
    // While the dead owner's lock still stands nobody can claim the pair: clean it,
    // then free the lock (only if it is still the dead owner's).
    removeRules(host, index);
    removed.push(`nft ${nftNames(index).chain}`);
    if (deleteVeth(host, index)) removed.push(`link ${vethName(index)}`);
    reclaimIfStale(`${host.lockDir}/${index}`, isAlive);
  }
  return { removed };
}

/**
 * Veths and chains of pair N with no lock file N: a teardown that half failed. Only safe
 * when no live server is registered (one could be claiming N right now).
 */
export function sweepUnlockedNetwork(host: NetworkHost): { removed: string[]; failed: string[] } {
  const out = { removed: [] as string[], failed: [] as string[] };
  const locked = new Set(claims(host.lockDir).map((c) => c.index));
  for (const link of routerLinks(host)) {
    const index = vethIndex(link);
    if (index === null || locked.has(index)) continue;
    (deleteVeth(host, index) ? out.removed : out.failed).push(`link ${link}`);
  }
  let chains: string[];
  try {
    const json = JSON.parse(nft(host, ['-j', 'list', 'table', ...TABLE_ARGS])) as { nftables?: Array<{ chain?: { name?: string } }> };
    chains = (json.nftables ?? []).flatMap((x) => (x.chain?.name ? [x.chain.name] : []));
  } catch {
    return out; // no table: no chains
  }
  const indexes = new Set(chains.flatMap((c) => nftChainIndex(c) ?? []));
  for (const i of indexes) {
    if (locked.has(i)) continue;
    removeRules(host, i);
    out.removed.push(`nft ${nftNames(i).chain}`);
  }
  return out;
}
