// Layer E's nftables ruleset as text: the shared `inet zviz` table, one sandbox's allowlist
// and drop recording, their removal, and the audit events read back from the drop sets.
// Pure (no nft is run here), so every rule is unit-tested as the text nft receives.
import type { Profile } from '../../profiles/schema.js';
import { NFT_TABLE, nftNames, vethName, VETH_WILDCARD } from '../host/names.js';
import type { AuditEvent } from '../types.js';

export type NetworkProfile = Profile['network'];
export type EgressProfile = Extract<NetworkProfile, { mode: 'egress' }>;

/** Drops recorded per sandbox that become audit events. */
export const MAX_NETWORK_AUDIT = 32;

/**
 * The table with its base chains: verdict maps from each sandbox's veth to its chains, and
 * a final drop for any `zvs*` interface without one. Masquerade toward `uplink` only when
 * the operator names one.
 */
export function tableScript(pool: string, uplink: string | null): string {
  const nat = uplink
    ? `chain postrouting { type nat hook postrouting priority srcnat; policy accept; ip saddr @pool4 oifname "${uplink}" masquerade }`
    : '';
  return `table ${NFT_TABLE} {
  map sandboxes { type ifname : verdict; }
  map sandboxes_in { type ifname : verdict; }
  set pool4 { type ipv4_addr; flags interval; elements = { ${pool} } }
  chain forward { type filter hook forward priority filter - 10; policy accept;
    iifname vmap @sandboxes
    iifname "${VETH_WILDCARD}" counter drop
    oifname "${VETH_WILDCARD}" ct state established,related accept
    oifname "${VETH_WILDCARD}" counter drop
  }
  chain input { type filter hook input priority filter - 10; policy accept;
    iifname vmap @sandboxes_in
    iifname "${VETH_WILDCARD}" counter drop
  }
  ${nat}
}
`;
}

/** One transaction: the allowlist of pair `index` and the recording of everything else. */
export function sandboxRules(index: number, net: EgressProfile): string {
  const { chain: sb, dropChain: drop, dropSets } = nftNames(index);
  const T = NFT_TABLE;
  // add + flush: whatever a failed teardown left for this pair is emptied, in the same
  // transaction, before this sandbox's rules go in — a new sandbox never inherits an old
  // allowlist or its drops.
  const lines = [
    `add set ${T} ${dropSets.v4port} { type ipv4_addr . inet_service; size 256; flags dynamic; counter; }`,
    `flush set ${T} ${dropSets.v4port}`,
    `add set ${T} ${dropSets.v4} { type ipv4_addr; size 256; flags dynamic; counter; }`,
    `flush set ${T} ${dropSets.v4}`,
    `add set ${T} ${dropSets.v6} { type ipv6_addr; size 64; flags dynamic; counter; }`,
    `flush set ${T} ${dropSets.v6}`,
    `add chain ${T} ${drop}`,
    `flush chain ${T} ${drop}`,
    `add rule ${T} ${drop} meta l4proto { tcp, udp } add @${dropSets.v4port} { ip daddr . th dport } drop`,
    `add rule ${T} ${drop} meta nfproto ipv4 add @${dropSets.v4} { ip daddr } drop`,
    `add rule ${T} ${drop} meta nfproto ipv6 add @${dropSets.v6} { ip6 daddr } drop`,
    `add rule ${T} ${drop} drop`,
    `add chain ${T} ${sb}`,
    `flush chain ${T} ${sb}`,
    `add rule ${T} ${sb} ct state established,related accept`,
    `add rule ${T} ${sb} meta nfproto ipv6 goto ${drop}`,
    // Never allowlistable: loopback tricks, link-local/metadata, multicast, other sandboxes.
    `add rule ${T} ${sb} ip daddr { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255 } goto ${drop}`,
    `add rule ${T} ${sb} ip daddr @pool4 goto ${drop}`,
  ];
  if (net.limits.newConnectionsPerSecond) {
    lines.push(`add rule ${T} ${sb} ct state new limit rate over ${net.limits.newConnectionsPerSecond}/second goto ${drop}`);
  }
  if (net.limits.maxConnections) {
    lines.push(`add rule ${T} ${sb} ct state new ct count over ${net.limits.maxConnections} goto ${drop}`);
  }
  if (net.dns) {
    lines.push(`add rule ${T} ${sb} ip daddr ${net.dns} meta l4proto { tcp, udp } th dport 53 accept`);
  }
  for (const a of net.allow) {
    const ports = a.ports.length > 0 ? ` th dport { ${a.ports.join(', ')} }` : '';
    lines.push(`add rule ${T} ${sb} ip daddr ${a.cidr} meta l4proto ${a.protocol}${ports} accept`);
  }
  lines.push(`add rule ${T} ${sb} goto ${drop}`);
  lines.push(`add element ${T} sandboxes { "${vethName(index)}" : goto ${sb} }`);
  lines.push(`add element ${T} sandboxes_in { "${vethName(index)}" : goto ${drop} }`);
  return lines.join('\n') + '\n';
}

/**
 * The commands that remove pair `index`'s rules, in an order where each one's target is no
 * longer referenced. As one transaction it fails whole when any part is already gone, so a
 * caller falls back to one command at a time.
 */
export function removalCommands(index: number): string[] {
  const { chain, dropChain, dropSets } = nftNames(index);
  const T = NFT_TABLE;
  return [
    `delete element ${T} sandboxes { "${vethName(index)}" }`,
    `delete element ${T} sandboxes_in { "${vethName(index)}" }`,
    `flush chain ${T} ${chain}`,
    `delete chain ${T} ${chain}`,
    `flush chain ${T} ${dropChain}`,
    `delete chain ${T} ${dropChain}`,
    `delete set ${T} ${dropSets.v4port}`,
    `delete set ${T} ${dropSets.v4}`,
    `delete set ${T} ${dropSets.v6}`,
  ];
}

/** The drop sets of pair `index`, destination-and-port first (see dropAudit). */
export function dropSetNames(index: number): string[] {
  const { v4port, v4, v6 } = nftNames(index).dropSets;
  return [v4port, v4, v6];
}

interface NftElem {
  elem?: { val: unknown; counter?: { packets: number } };
}

/**
 * Audit events from `nft -j list set` output of a sandbox's drop sets (in dropSetNames
 * order): one per destination (and port, when the packet had one), at most
 * MAX_NETWORK_AUDIT. A destination seen with a port is not listed again without one.
 */
export function dropAudit(sets: ReadonlyArray<{ name: string; json: unknown }>): AuditEvent[] {
  const out: AuditEvent[] = [];
  for (const { name, json } of sets) {
    const list = (json as { nftables?: Array<{ set?: { elem?: unknown[] } }> } | null)?.nftables;
    const elems = list?.find((x) => x.set)?.set?.elem ?? [];
    const withPort = name.startsWith('d4-');
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
      if (!dst || out.length >= MAX_NETWORK_AUDIT) continue;
      const seen = out.some((o) => o.kind === 'network' && o.dst === dst && (!withPort || o.port === port));
      if (!seen) out.push({ kind: 'network', dst, port, action: 'drop' });
    }
  }
  return out;
}

/** The sandbox's /etc/resolv.conf: the profile's resolver, or nothing. */
export function resolvConf(net: NetworkProfile): string {
  return net.mode === 'egress' && net.dns ? `nameserver ${net.dns}\noptions edns0\n` : '';
}
