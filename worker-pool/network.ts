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
import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, readFileSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import type { Profile } from '../profiles/schema.js';
import { processAlive } from './pids.js';
import type { AuditEvent } from './types.js';

export interface NetworkHost {
  /** Named network namespace that routes for sandboxes; null: the host's own. */
  routerNetns: string | null;
  /** IPv4 pool sandboxes get /31 pairs from, e.g. "10.199.0.0/16". */
  pool: string;
  /** Interface to masquerade egress on (production only); null: no NAT. */
  uplink: string | null;
  /** Directory of allocation lock files (host-wide, shared by every server). */
  lockDir: string;
}

export type NetworkProfile = Profile['network'];

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

const TABLE = 'inet zviz';
const MAX_AUDIT = 32;

function run(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 10_000 });
  if (r.error) throw new Error(`Cannot run ${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

function inRouter(host: NetworkHost, cmd: string, args: string[], input?: string): string {
  return host.routerNetns ? run('ip', ['netns', 'exec', host.routerNetns, cmd, ...args], input) : run(cmd, args, input);
}

function ipArgs(host: NetworkHost): string[] {
  return host.routerNetns ? ['-n', host.routerNetns] : [];
}

export function parseCidr(cidr: string): { base: number; bits: number } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (!m) throw new Error(`Invalid IPv4 CIDR: ${cidr}`);
  const octets = m.slice(1, 5).map(Number);
  const bits = Number(m[5]);
  if (octets.some((o) => o > 255) || bits > 32) throw new Error(`Invalid IPv4 CIDR: ${cidr}`);
  const base = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { base: (base & mask) >>> 0, bits };
}

export function ipString(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** The /31 pair of pool index i: router side first. */
export function pairFor(pool: string, index: number): { outer: string; inner: string } {
  const { base, bits } = parseCidr(pool);
  const pairs = 2 ** (32 - bits) / 2;
  if (index < 0 || index >= pairs) throw new Error(`Pool ${pool} has no pair ${index}`);
  return { outer: ipString(base + 2 * index), inner: ipString(base + 2 * index + 1) };
}


let tmpSeq = 0;

/** Links a file holding our pid at `path`: the claim and its owner appear at once. */
function tryClaim(lockDir: string, path: string): boolean {
  const tmp = `${lockDir}/.claim-${process.pid}-${tmpSeq++}`;
  writeFileSync(tmp, String(process.pid), { mode: 0o600 });
  try {
    linkSync(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return false;
  } finally {
    unlinkSync(tmp);
  }
}

function ownerOf(path: string): number | null {
  try {
    const owner = Number(readFileSync(path, 'utf8'));
    return Number.isInteger(owner) && owner > 0 ? owner : 0;
  } catch {
    return null; // released meanwhile
  }
}

/**
 * Frees a lock whose owner is dead. The file is first moved aside (only one of several
 * reclaimers can move it); if what was moved turns out to be a live claim made in the
 * meantime, it is put back.
 */
export function reclaimIfStale(path: string, isAlive: (pid: number) => boolean = processAlive): boolean {
  const owner = ownerOf(path);
  if (owner === null || (owner > 0 && isAlive(owner))) return false;
  const aside = `${path}.stale-${process.pid}-${tmpSeq++}`;
  try {
    renameSync(path, aside);
  } catch {
    return false;
  }
  const moved = ownerOf(aside);
  if (moved !== null && moved > 0 && isAlive(moved)) {
    try {
      linkSync(aside, path);
    } catch {
      // the slot was claimed again meanwhile; the live claim we moved keeps its rules
    }
  }
  unlinkSync(aside);
  return true;
}

/**
 * Claims a free pool index with a lock file holding our pid, linked into place so that a
 * claim never exists without its owner; a lock of a dead process is reclaimed.
 * Host-wide, so servers sharing a host never collide.
 */
export function claimIndex(host: NetworkHost, hint: number): number {
  const { bits } = parseCidr(host.pool);
  const pairs = 2 ** (32 - bits) / 2;
  mkdirSync(host.lockDir, { recursive: true, mode: 0o700 });
  // Several passes, a millisecond apart: pairs are released and claimed all the time, so
  // one pass can find each pair taken at the moment it looked although some pair was free
  // at every moment.
  for (let n = 0; n < 10 * pairs; n++) {
    if (n > 0 && n % pairs === 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    const i = (hint + n) % pairs;
    const path = `${host.lockDir}/${i}`;
    if (tryClaim(host.lockDir, path)) return i;
    if (reclaimIfStale(path) && tryClaim(host.lockDir, path)) return i;
  }
  throw new Error(`Network pool ${host.pool} is exhausted`);
}

function releaseIndex(host: NetworkHost, index: number): void {
  try {
    unlinkSync(`${host.lockDir}/${index}`);
  } catch {
    // already gone
  }
}

/** The `inet zviz` table with its base chains; made once, left as it is if present. */
export function ensureTable(host: NetworkHost): void {
  try {
    inRouter(host, 'nft', ['list', 'table', 'inet', 'zviz']);
    return; // a sibling server (or our predecessor, swept above) made it
  } catch {
    // absent: make it
  }
  const nat = host.uplink
    ? `chain postrouting { type nat hook postrouting priority srcnat; policy accept; ip saddr @pool4 oifname "${host.uplink}" masquerade }`
    : '';
  inRouter(
    host,
    'nft',
    ['-f', '-'],
    `table ${TABLE} {
  map sandboxes { type ifname : verdict; }
  map sandboxes_in { type ifname : verdict; }
  set pool4 { type ipv4_addr; flags interval; elements = { ${host.pool} } }
  chain forward { type filter hook forward priority filter - 10; policy accept;
    iifname vmap @sandboxes
    iifname "zvs*" counter drop
    oifname "zvs*" ct state established,related accept
    oifname "zvs*" counter drop
  }
  chain input { type filter hook input priority filter - 10; policy accept;
    iifname vmap @sandboxes_in
    iifname "zvs*" counter drop
  }
  ${nat}
}
`,
  );
}

/** Removes the table when no sandbox of any server on this host still has rules in it. */
export function dropTable(host: NetworkHost): void {
  if (existsSync(host.lockDir) && readdirSync(host.lockDir).length > 0) return;
  try {
    inRouter(host, 'nft', ['delete', 'table', 'inet', 'zviz']);
  } catch {
    // absent
  }
}

function rulesFor(index: number, net: Extract<NetworkProfile, { mode: 'egress' }>): string {
  const sb = `sb-${index}`;
  const drop = `sbd-${index}`;
  // add + flush: whatever a failed teardown left for this pair is emptied, in the same
  // transaction, before this sandbox's rules go in — a new sandbox never inherits an old
  // allowlist or its drops.
  const lines = [
    `add set ${TABLE} d4-${index} { type ipv4_addr . inet_service; size 256; flags dynamic; counter; }`,
    `flush set ${TABLE} d4-${index}`,
    `add set ${TABLE} da-${index} { type ipv4_addr; size 256; flags dynamic; counter; }`,
    `flush set ${TABLE} da-${index}`,
    `add set ${TABLE} d6-${index} { type ipv6_addr; size 64; flags dynamic; counter; }`,
    `flush set ${TABLE} d6-${index}`,
    `add chain ${TABLE} ${drop}`,
    `flush chain ${TABLE} ${drop}`,
    `add rule ${TABLE} ${drop} meta l4proto { tcp, udp } add @d4-${index} { ip daddr . th dport } drop`,
    `add rule ${TABLE} ${drop} meta nfproto ipv4 add @da-${index} { ip daddr } drop`,
    `add rule ${TABLE} ${drop} meta nfproto ipv6 add @d6-${index} { ip6 daddr } drop`,
    `add rule ${TABLE} ${drop} drop`,
    `add chain ${TABLE} ${sb}`,
    `flush chain ${TABLE} ${sb}`,
    `add rule ${TABLE} ${sb} ct state established,related accept`,
    `add rule ${TABLE} ${sb} meta nfproto ipv6 goto ${drop}`,
    // Never allowlistable: loopback tricks, link-local/metadata, multicast, other sandboxes.
    `add rule ${TABLE} ${sb} ip daddr { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255 } goto ${drop}`,
    `add rule ${TABLE} ${sb} ip daddr @pool4 goto ${drop}`,
  ];
  if (net.limits.newConnectionsPerSecond) {
    lines.push(`add rule ${TABLE} ${sb} ct state new limit rate over ${net.limits.newConnectionsPerSecond}/second goto ${drop}`);
  }
  if (net.limits.maxConnections) {
    lines.push(`add rule ${TABLE} ${sb} ct state new ct count over ${net.limits.maxConnections} goto ${drop}`);
  }
  if (net.dns) {
    lines.push(`add rule ${TABLE} ${sb} ip daddr ${net.dns} meta l4proto { tcp, udp } th dport 53 accept`);
  }
  for (const a of net.allow) {
    const ports = a.ports.length > 0 ? ` th dport { ${a.ports.join(', ')} }` : '';
    lines.push(`add rule ${TABLE} ${sb} ip daddr ${a.cidr} meta l4proto ${a.protocol}${ports} accept`);
  }
  lines.push(`add rule ${TABLE} ${sb} goto ${drop}`);
  lines.push(`add element ${TABLE} sandboxes { "zvs${index}" : goto ${sb} }`);
  lines.push(`add element ${TABLE} sandboxes_in { "zvs${index}" : goto ${drop} }`);
  return lines.join('\n') + '\n';
}

/**
 * Removes a pair's rules: one transaction, or, if that fails (something was already
 * gone, or made by an older version), each command on its own.
 */
function removeRules(host: NetworkHost, index: number): void {
  const script = removalFor(index);
  try {
    inRouter(host, 'nft', ['-f', '-'], script);
  } catch {
    for (const line of script.trim().split('\n')) {
      try {
        inRouter(host, 'nft', ['-f', '-'], `${line}\n`);
      } catch {
        // not there
      }
    }
  }
}

function removalFor(index: number): string {
  return [
    `delete element ${TABLE} sandboxes { "zvs${index}" }`,
    `delete element ${TABLE} sandboxes_in { "zvs${index}" }`,
    `flush chain ${TABLE} sb-${index}`,
    `delete chain ${TABLE} sb-${index}`,
    `flush chain ${TABLE} sbd-${index}`,
    `delete chain ${TABLE} sbd-${index}`,
    `delete set ${TABLE} d4-${index}`,
    `delete set ${TABLE} da-${index}`,
    `delete set ${TABLE} d6-${index}`,
  ].join('\n') + '\n';
}

interface NftElem {
  elem?: { val: unknown; counter?: { packets: number } };
}

/** Dropped destinations recorded in the sandbox's sets, as audit events. */
function readDrops(host: NetworkHost, index: number): AuditEvent[] {
  const out: AuditEvent[] = [];
  for (const set of [`d4-${index}`, `da-${index}`, `d6-${index}`]) {
    let json: { nftables?: Array<{ set?: { elem?: unknown[] } }> };
    try {
      json = JSON.parse(inRouter(host, 'nft', ['-j', 'list', 'set', 'inet', 'zviz', set])) as typeof json;
    } catch {
      continue;
    }
    const elems = json.nftables?.find((x) => x.set)?.set?.elem ?? [];
    for (const raw of elems) {
      const e = raw as NftElem | { concat: unknown[] } | string;
      const val = typeof e === 'object' && e !== null && 'elem' in e ? (e as NftElem).elem!.val : e;
      let dst: string | null = null;
      let port: number | null = null;
      if (typeof val === 'string') dst = val;
      else if (val && typeof val === 'object' && 'concat' in val) {
        const c = (val as { concat: unknown[] }).concat;
        dst = String(c[0]);
        port = Number(c[1]);
      }
      if (dst && out.length < MAX_AUDIT && !out.some((o) => o.kind === 'network' && o.dst === dst && o.port === port)) {
        if (!set.startsWith('d4-') && out.some((o) => o.kind === 'network' && o.dst === dst)) continue;
        out.push({ kind: 'network', dst, port, action: 'drop' });
      }
    }
  }
  return out;
}

function resolvConf(net: NetworkProfile): string {
  return net.mode === 'egress' && net.dns ? `nameserver ${net.dns}\noptions edns0\n` : '';
}

let nextHint = Math.floor(Math.random() * 1024);

/**
 * Removes what setupNetwork made for one sandbox (after its supervisor is gone) and
 * returns the drops recorded for it as audit events.
 */
export function teardownNetwork(host: NetworkHost | null, info: NetworkInfo | null): AuditEvent[] {
  if (!host || !info) return [];
  let drops: AuditEvent[] = [];
  if (info.rules) {
    drops = readDrops(host, info.index);
    removeRules(host, info.index);
  }
  // The veth first, explicitly: deleting a namespace frees its devices asynchronously,
  // and the /31 pair must not be claimed again while the old router end still exists.
  try {
    run('ip', [...ipArgs(host), 'link', 'del', `zvs${info.index}`]);
  } catch {
    // never made, or already gone
  }
  try {
    run('ip', ['netns', 'del', info.ns]);
  } catch {
    // swept later
  }
  releaseIndex(host, info.index);
  return drops;
}

/**
 * Prepares the sandbox's network before its supervisor starts. For mode "none" nothing
 * is made here (the supervisor creates a private namespace with only `lo`).
 */
export function setupNetwork(host: NetworkHost | null, sandboxId: string, net: NetworkProfile): SandboxNetwork {
  if (net.mode === 'none') return { netnsPath: null, resolvConf: '', info: null };
  if (net.mode === 'join') {
    // Test-only: join a namespace someone else made and owns; nothing to tear down.
    return { netnsPath: `/run/netns/${net.netns}`, resolvConf: '', info: null };
  }
  if (!host) throw new Error('Cannot give a sandbox egress: the host network is not configured');
  const index = claimIndex(host, nextHint++);
  const info: NetworkInfo = { index, ns: `zviz-${sandboxId}`, rules: false };
  const veth = `zvs${index}`;
  const { outer, inner } = pairFor(host.pool, index);
  try {
    run('ip', ['netns', 'add', info.ns]);
    run('ip', [...ipArgs(host), '-batch', '-'], [
      `link add ${veth} type veth peer name eth0 netns ${info.ns}`,
      `addr add ${outer}/31 dev ${veth}`,
      `link set ${veth} up`,
    ].join('\n') + '\n');
    // IPv6 off before eth0 comes up: the egress policy is IPv4, and no v6 packet (not
    // even link-local neighbour discovery) should leave the sandbox.
    run('ip', ['netns', 'exec', info.ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    run('ip', ['-n', info.ns, '-batch', '-'], [
      'link set lo up',
      `addr add ${inner}/31 dev eth0`,
      'link set eth0 up',
      `route add default via ${outer}`,
    ].join('\n') + '\n');
    inRouter(host, 'nft', ['-f', '-'], rulesFor(index, net));
    info.rules = true;
  } catch (e) {
    teardownNetwork(host, info);
    throw e;
  }
  return { netnsPath: `/run/netns/${info.ns}`, resolvConf: resolvConf(net), info };
}

/** Removes namespaces, veths, chains and lock files of servers that are gone. */
export function sweepNetwork(host: NetworkHost, isAlive: (pid: number) => boolean): { removed: string[] } {
  const removed: string[] = [];
  const dir = '/run/netns';
  if (existsSync(dir)) {
    for (const name of readdirSync(dir)) {
      const m = /^zviz-(\d+)-/.exec(name);
      if (!m || isAlive(Number(m[1]))) continue;
      try {
        run('ip', ['netns', 'del', name]);
        removed.push(`netns ${name}`);
      } catch {
        // keep going
      }
    }
  }
  if (existsSync(host.lockDir)) {
    for (const f of readdirSync(host.lockDir)) {
      const index = Number(f);
      if (!Number.isInteger(index)) continue;
      let owner = 0;
      try {
        owner = Number(readFileSync(`${host.lockDir}/${f}`, 'utf8'));
      } catch {
        continue;
      }
      if (isAlive(owner)) continue;
      // While the dead owner's lock still stands nobody can claim the pair: clean it,
      // then free the lock (only if it is still the dead owner's).
      removeRules(host, index);
      removed.push(`nft sb-${index}`);
      try {
        run('ip', [...ipArgs(host), 'link', 'del', `zvs${index}`]);
        removed.push(`link zvs${index}`);
      } catch {
        // gone with its namespace
      }
      reclaimIfStale(`${host.lockDir}/${f}`, isAlive);
    }
  }
  return { removed };
}
