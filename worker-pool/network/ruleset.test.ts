// Layer E's ruleset as the text nft receives, and the audit read back from the drop sets.
// No nft runs here: test/layer-e.test.ts and test/net-teardown.test.ts load these rules
// into a real router namespace.
import { describe, expect, it } from 'vitest';
import { networkSchema } from '../../profiles/schema.js';
import { dropAudit, dropSetNames, MAX_NETWORK_AUDIT, removalCommands, resolvConf, sandboxRules, tableScript, type EgressProfile } from './ruleset.js';

function egress(raw: Record<string, unknown>): EgressProfile {
  const net = networkSchema.parse({ mode: 'egress', ...raw });
  if (net.mode !== 'egress') throw new Error('not egress');
  return net;
}

/** `nft -j list set` of one set holding `elems`. */
function listed(name: string, elems: unknown[]): { name: string; json: unknown } {
  return { name, json: { nftables: [{ metainfo: { version: '1.0.6' } }, { set: { family: 'inet', name, table: 'zviz', elem: elems } }] } };
}

describe('tableScript', () => {
  it('makes the shared table: verdict maps per veth, the pool set, and drops for any zvs* without a map entry', () => {
    const text = tableScript('10.199.0.0/16', null);
    expect(text).toMatch(/^table inet zviz \{/);
    expect(text).toContain('map sandboxes { type ifname : verdict; }');
    expect(text).toContain('set pool4 { type ipv4_addr; flags interval; elements = { 10.199.0.0/16 } }');
    expect(text).toContain('iifname "zvs*" counter drop');
    expect(text).toContain('oifname "zvs*" ct state established,related accept');
    expect(text).not.toContain('masquerade');
  });

  it('masquerades toward the uplink only when one is named', () => {
    expect(tableScript('10.199.0.0/16', 'eth9')).toContain('ip saddr @pool4 oifname "eth9" masquerade');
  });
});

describe('sandboxRules', () => {
  it("empties whatever a pair's chains and sets held before adding the new rules, in one script", () => {
    const lines = sandboxRules(7, egress({ allow: [] })).trim().split('\n');
    for (const name of ['set inet zviz d4-7', 'set inet zviz da-7', 'set inet zviz d6-7', 'chain inet zviz sbd-7', 'chain inet zviz sb-7']) {
      const added = lines.findIndex((l) => l.startsWith(`add ${name}`));
      const flushed = lines.findIndex((l) => l === `flush ${name}`);
      expect(added, name).toBeGreaterThanOrEqual(0);
      expect(flushed, name).toBe(added + 1);
    }
  });

  it('refuses loopback, link-local, multicast and other sandboxes before any allow rule, and IPv6 entirely', () => {
    const lines = sandboxRules(3, egress({ allow: [{ cidr: '0.0.0.0/0', ports: [443] }] })).trim().split('\n');
    const never = lines.findIndex((l) => l.includes('169.254.0.0/16') && l.includes('127.0.0.0/8') && l.endsWith('goto sbd-3'));
    const pool = lines.findIndex((l) => l === 'add rule inet zviz sb-3 ip daddr @pool4 goto sbd-3');
    const allow = lines.findIndex((l) => l.includes('ip daddr 0.0.0.0/0'));
    expect(never).toBeGreaterThan(0);
    expect(pool).toBeGreaterThan(0);
    expect(allow).toBeGreaterThan(Math.max(never, pool));
    expect(lines).toContain('add rule inet zviz sb-3 meta nfproto ipv6 goto sbd-3');
    // Whatever the allowlist does not accept ends in the drop chain, which records it.
    expect(lines.filter((l) => l.startsWith('add rule inet zviz sb-3')).at(-1)).toBe('add rule inet zviz sb-3 goto sbd-3');
  });

  it('allows exactly the listed destinations, protocols and ports, and DNS to the named resolver', () => {
    const text = sandboxRules(
      1,
      egress({
        dns: '10.77.0.53',
        allow: [
          { cidr: '10.77.0.2/32', ports: [80, 443] },
          { cidr: '10.78.0.0/16', protocol: 'udp', ports: [] },
        ],
      }),
    );
    expect(text).toContain('add rule inet zviz sb-1 ip daddr 10.77.0.53 meta l4proto { tcp, udp } th dport 53 accept');
    expect(text).toContain('add rule inet zviz sb-1 ip daddr 10.77.0.2/32 meta l4proto tcp th dport { 80, 443 } accept');
    expect(text).toContain('add rule inet zviz sb-1 ip daddr 10.78.0.0/16 meta l4proto udp accept');
  });

  it('limits new connections per second and open connections when the profile says so', () => {
    const text = sandboxRules(2, egress({ allow: [], limits: { newConnectionsPerSecond: 20, maxConnections: 8 } }));
    expect(text).toContain('add rule inet zviz sb-2 ct state new limit rate over 20/second goto sbd-2');
    expect(text).toContain('add rule inet zviz sb-2 ct state new ct count over 8 goto sbd-2');
  });

  it("maps the pair's veth to its chains last, so no packet meets a half-made chain", () => {
    const lines = sandboxRules(5, egress({ allow: [] })).trim().split('\n');
    expect(lines.slice(-2)).toEqual([
      'add element inet zviz sandboxes { "zvs5" : goto sb-5 }',
      'add element inet zviz sandboxes_in { "zvs5" : goto sbd-5 }',
    ]);
  });
});

describe('removalCommands', () => {
  it('unmaps the veth before deleting the chains it jumps to, and the chains before the sets they fill', () => {
    const cmds = removalCommands(4);
    expect(cmds[0]).toBe('delete element inet zviz sandboxes { "zvs4" }');
    expect(cmds.indexOf('delete chain inet zviz sb-4')).toBeGreaterThan(cmds.indexOf('flush chain inet zviz sb-4'));
    expect(cmds.indexOf('delete set inet zviz d4-4')).toBeGreaterThan(cmds.indexOf('delete chain inet zviz sbd-4'));
    expect(cmds.filter((c) => c.startsWith('delete set')).map((c) => c.split(' ').at(-1))).toEqual(dropSetNames(4));
  });
});

describe('dropAudit', () => {
  it('turns set elements (with counters or bare) into one drop event per destination and port', () => {
    const [d4, da, d6] = dropSetNames(9) as [string, string, string];
    const events = dropAudit([
      listed(d4, [{ elem: { val: { concat: ['10.77.0.2', 8081] }, counter: { packets: 3, bytes: 180 } } }, { concat: ['10.77.0.2', 8082] }]),
      listed(da, [{ elem: { val: '10.77.0.2', counter: { packets: 1, bytes: 60 } } }, '10.77.0.9']),
      listed(d6, ['fd00::1']),
    ]);
    expect(events).toEqual([
      { kind: 'network', dst: '10.77.0.2', port: 8081, action: 'drop' },
      { kind: 'network', dst: '10.77.0.2', port: 8082, action: 'drop' },
      // 10.77.0.2 without a port is already listed with one.
      { kind: 'network', dst: '10.77.0.9', port: null, action: 'drop' },
      { kind: 'network', dst: 'fd00::1', port: null, action: 'drop' },
    ]);
  });

  it(`lists at most ${MAX_NETWORK_AUDIT} destinations and ignores what it cannot read`, () => {
    const many = Array.from({ length: 100 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
    expect(dropAudit([listed('da-1', many)])).toHaveLength(MAX_NETWORK_AUDIT);
    expect(dropAudit([{ name: 'd4-1', json: null }, { name: 'da-1', json: { nftables: [] } }, listed('d6-1', [{ weird: true }])])).toEqual([]);
  });
});

describe('resolvConf', () => {
  it("names the profile's resolver for egress, and nothing otherwise", () => {
    expect(resolvConf(egress({ dns: '10.77.0.53', allow: [] }))).toBe('nameserver 10.77.0.53\noptions edns0\n');
    expect(resolvConf(egress({ allow: [] }))).toBe('');
    expect(resolvConf({ mode: 'none' })).toBe('');
  });
});
