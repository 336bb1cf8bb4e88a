// Layer E, privileged: the network a sandbox gets. mode "none" is a namespace with only
// its own `lo`; mode "egress" is a veth into a router namespace whose nftables table lets
// out exactly the profile's allowlist and drops (and audits) everything else.
//
// Every packet stays inside namespaces this suite creates: ZViz routes egress sandboxes
// into our router namespace (ZVIZ_NET_ROUTER_NETNS), behind which our upstream namespace
// answers on 10.77.0.2 and 169.254.77.1 (see net-topology.ts). The only other destination
// is a TCP server this suite opens on the host's 127.0.0.1, which no sandbox may reach.
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { SOCKET_FAMILIES } from '../profiles/index.js';
import { NET_LOCK_DIR } from '../worker-pool/host/names.js';
import { belongsToOthers, hostLeftovers } from './support/leftovers.js';
import { drop, DROPPED, type NetAudit, netLeftovers, netnsOf, networkAudit, PY_NET, PY_NET_ADMIN } from './support/net-probes.js';
import { createTopology, LINK_LOCAL_IP, networkToolsMissing, pythonIn, ROUTER_IP, type Topology, UPSTREAM_IP } from './support/net-topology.js';
import { privilegedReason, repoRoot, type RunningServer, startServer } from './support/server.js';
import { sh, trySh } from './support/shell.js';
import { EXPECTED_REAL, EXPECTED_REFUSALS, expectedSweep, pySocketFamilies } from './support/socket-families.js';
import { x86_64Syscalls } from './support/syscall-table.js';
import { pollUntil, scaledMs, sleep, timeScale, token } from './support/wait.js';

const skipReason = privilegedReason() ?? networkToolsMissing();
const POOL = '10.199.0.0/24';
const POOL_ADDRESS = /^10\.199\.0\.\d+$/;
/** A port the listening sandbox may bind (Landlock tcpBind). */
const PEER_PORT = 9000;

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

describe.skipIf(skipReason !== null)(`layer E: sandbox networking${skipReason ? ` [skipped: ${skipReason}]` : ''}`, () => {
  const tag = token().slice(0, 6);
  let topo: Topology | null = null;
  let profilesDir = '';
  let hostTcp: Server | null = null;
  let hostTcpPort = 0;
  let hostTcpAccepted = 0;
  let hostBefore: string[] = []; // what other servers had on a shared host before ours started

  function writeProfile(name: string, edit: (p: any) => void): void {
    const p = JSON.parse(readFileSync(join(repoRoot, 'profiles', 'default.json'), 'utf8'));
    p.name = name;
    p.description = `layer E test profile ${name}`;
    edit(p);
    writeFileSync(join(profilesDir, `${name}.json`), JSON.stringify(p, null, 2));
  }

  function start(warm: boolean, env: Record<string, string> = {}): Promise<RunningServer> {
    return startServer({
      env: {
        ZVIZ_NET_ROUTER_NETNS: topo!.router,
        ZVIZ_NET_POOL: POOL,
        ZVIZ_PROFILES_DIR: profilesDir,
        // Without pre-warming every invocation makes and removes its own namespace, so
        // "nothing is left after each invocation" is exact.
        ...(warm ? {} : { ZVIZ_WARM_MAX: '0' }),
        ...env,
      },
    });
  }

  async function expectNoNetLeftovers(pid: number): Promise<void> {
    const left = await pollUntil(() => netLeftovers(pid, topo!.router), (l) => l.length === 0, scaledMs(2000), 100);
    expect(left, left.join('\n')).toEqual([]);
  }

  /**
   * What hostLeftovers() finds that is server `pid`'s: new since the suite started, not a
   * live sibling's (other test runs may share the host), and mounts only if they name its
   * sandboxes or its state directory. Exactly hostLeftovers() when no other server runs.
   */
  function leftoversOf(pid: number, stateDir: string): string[] {
    return hostLeftovers()
      .filter((e) => !hostBefore.includes(e))
      .filter((e) => {
        if (e.startsWith('mount ')) return e.includes(`zviz-${pid}-`) || e.includes(stateDir);
        // 'zviz-supervisor' anywhere in a command line (a compiler building it) is not one.
        if (/^process \d+ /.test(e) && !/^process \d+ \S*\/zviz-supervisor(\s|$)/.test(e)) return false;
        return !belongsToOthers(e, [pid]);
      });
  }

  /** Stops `s` and checks that nothing of it is left, in the router's namespace or the host's. */
  async function stopAndExpectClean(s: RunningServer): Promise<void> {
    const { pid, stateDir } = s;
    const code = await s.stop();
    // A server that does not exit 0 on SIGTERM skipped its clean-up: say so first.
    expect(code, `server ${pid} exited with ${code} on SIGTERM:\n${s.logs().split('\n').slice(-20).join('\n')}`).toBe(0);
    await expectNoNetLeftovers(pid);
    const left = await pollUntil(() => leftoversOf(pid, stateDir), (l) => l.length === 0, scaledMs(3000), 100);
    expect(left, left.join('\n')).toEqual([]);
  }

  /** Runs Python that prints one JSON document; `out` is that document. `timeoutMs` is scaled (at most the profiles' 60 s). */
  async function py(
    s: RunningServer,
    profile: string,
    code: string,
    timeoutMs = 10_000,
  ): Promise<{ out: any; audit: NetAudit[]; raw: any }> {
    const r = await s.invoke({ runtime: 'python', profile, code: PY_NET + code, limits: { timeoutMs: scaledMs(timeoutMs, 60_000) } });
    if (r.status !== 'ok') throw new Error(`function ended '${r.status}' (${r.reason}):\n${r.stdout}\n--- stderr\n${r.stderr}`);
    return { out: JSON.parse(r.stdout), audit: networkAudit(r), raw: r };
  }

  beforeAll(async () => {
    // A TCP server on the host's loopback that no sandbox may reach.
    hostTcp = createServer((c) => {
      hostTcpAccepted++;
      c.destroy();
    });
    await new Promise<void>((res) => hostTcp!.listen(0, '127.0.0.1', res));
    hostTcpPort = (hostTcp.address() as { port: number }).port;

    profilesDir = mkdtempSync(join(tmpdir(), 'nettest-profiles-'));
    for (const f of ['default.json', 'minimal.json', 'ci.json', 'seccomp']) {
      cpSync(join(repoRoot, 'profiles', f), join(profilesDir, f), { recursive: true });
    }
    const egress = (allow: unknown[], extra: Record<string, unknown> = {}) => (p: any) => {
      p.network = { mode: 'egress', allow, ...extra };
    };
    // mode none, but Landlock allows connecting to the host server's port: only the
    // namespace stands between the sandbox and the host's 127.0.0.1.
    writeProfile('none-connect', (p) => (p.landlock.tcpConnect = [hostTcpPort]));
    // Landlock also allows 8081, so that nftables alone must stop it.
    writeProfile('egress-port', (p) => {
      egress([{ cidr: `${UPSTREAM_IP}/32`, ports: [8080] }])(p);
      p.landlock.tcpConnect = [8081];
    });
    // Every port of the upstream: Landlock leaves TCP connect to nftables.
    writeProfile('egress-any', (p) => {
      egress([{ cidr: `${UPSTREAM_IP}/32`, ports: [] }])(p);
      p.landlock.tcpBind = [PEER_PORT];
    });
    // The same two, also naming AF_NETLINK and AF_PACKET, so that the missing capabilities
    // alone must stop what those sockets try (the shipped families refuse the sockets).
    const rawFamilies = (p: any) => (p.seccomp.socketFamilies = ['AF_UNIX', 'AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_PACKET']);
    writeProfile('default-raw', rawFamilies);
    writeProfile('egress-any-raw', (p) => {
      egress([{ cidr: `${UPSTREAM_IP}/32`, ports: [] }])(p);
      rawFamilies(p);
    });
    writeProfile('egress-rate', egress([{ cidr: `${UPSTREAM_IP}/32`, ports: [8080] }], { limits: { newConnectionsPerSecond: 2 } }));
    writeProfile('egress-maxconn', egress([{ cidr: `${UPSTREAM_IP}/32`, ports: [8080] }], { limits: { maxConnections: 2 } }));
    writeProfile('egress-dns', egress([], { dns: UPSTREAM_IP }));

    hostBefore = hostLeftovers();
    topo = await createTopology(tag, {
      pool: POOL,
      http: [
        { host: UPSTREAM_IP, port: 8080 },
        { host: UPSTREAM_IP, port: 8081 },
        { host: LINK_LOCAL_IP, port: 80 },
      ],
      udpEcho: [
        { host: UPSTREAM_IP, port: 53 },
        { host: UPSTREAM_IP, port: 5353 },
      ],
    });
  });

  afterAll(async () => {
    try {
      if (topo) {
        // A server keeps the table while any pool lock exists; it goes with the namespace anyway.
        trySh('ip', ['netns', 'exec', topo.router, 'nft', 'delete', 'table', 'inet', 'zviz']);
        topo.destroy();
        const ours = sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith('nettest-') && l.includes(tag));
        expect(ours).toEqual([]);
      }
    } finally {
      await new Promise<void>((res) => (hostTcp ? hostTcp.close(() => res()) : res()));
      if (profilesDir) rmSync(profilesDir, { recursive: true, force: true });
    }
  });

  test('the topology itself reaches every destination from the router namespace', () => {
    // Controls: whatever a sandbox cannot reach below is stopped by ZViz, not missing.
    const out = JSON.parse(
      pythonIn(
        topo!.router,
        PY_NET +
          `print(json.dumps([http_get('http://${UPSTREAM_IP}:8080/'), http_get('http://${UPSTREAM_IP}:8081/'),
             http_get('http://${LINK_LOCAL_IP}/'), udp('${UPSTREAM_IP}', 5353, 'x'), udp('${UPSTREAM_IP}', 53, 'y')]))`,
      ),
    );
    expect(out).toEqual([
      { status: 200, body: `upstream ${UPSTREAM_IP}:8080` },
      { status: 200, body: `upstream ${UPSTREAM_IP}:8081` },
      { status: 200, body: `upstream ${LINK_LOCAL_IP}:80` },
      'echo:x',
      'echo:y',
    ]);
  });

  describe('one sandbox per invocation (no pre-warming)', () => {
    let s: RunningServer;
    beforeAll(async () => {
      s = await start(false);
    });
    afterEach(async () => {
      if (s) await expectNoNetLeftovers(s.pid);
    });
    afterAll(async () => {
      if (s) await stopAndExpectClean(s);
    });

    describe('mode none', () => {
      test('the sandbox sees only lo and has no route out', async () => {
        const { out } = await py(
          s,
          'default',
          `print(json.dumps({
  'links': sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]),
  'route': open('/proc/net/route').read().splitlines(),
  'route6Devices': sorted(set(l.split()[-1] for l in open('/proc/net/ipv6_route').read().splitlines())),
}))`,
        );
        expect(out.links).toEqual(['lo']);
        expect(out.route).toHaveLength(1);
        expect(out.route[0]).toMatch(/^Iface\s+Destination\s+Gateway/);
        // With IPv6 on, `lo` carries ::1 and its local routes; nothing may use another device.
        expect(out.route6Devices.filter((d: string) => d !== 'lo')).toEqual([]);
      });

      test.each([
        // Landlock allows the port here: only the namespace separates the two loopbacks.
        ['none-connect', 'ECONNREFUSED', ['ECONNREFUSED']],
        // Landlock may refuse first (EACCES); either way nothing arrives.
        ['default', 'ECONNREFUSED or EACCES', ['ECONNREFUSED', 'EACCES']],
      ])("under %s a TCP connect to the test's server on the host's 127.0.0.1 fails with %s (the sandbox's loopback is its own)", async (profile, _, expected) => {
        const before = hostTcpAccepted;
        const { out } = await py(s, profile, `print(json.dumps(tcp('127.0.0.1', ${hostTcpPort})))`);
        expect(expected).toContain(out);
        expect(hostTcpAccepted).toBe(before);
      });
    });

    describe('mode egress', () => {
      test('the allowed cidr:port answers an HTTP GET and nothing is audited', async () => {
        const { out, audit } = await py(s, 'egress-port', `print(json.dumps(http_get('http://${UPSTREAM_IP}:8080/')))`);
        expect(out).toEqual({ status: 200, body: `upstream ${UPSTREAM_IP}:8080` });
        expect(audit).toEqual([]);
      });

      test('another port of the allowed address is dropped by nftables (Landlock allows it) and audited', async () => {
        const { out, audit } = await py(s, 'egress-port', `print(json.dumps(tcp('${UPSTREAM_IP}', 8081)))`);
        expect(DROPPED).toContain(out);
        expect(audit).toContainEqual(drop(UPSTREAM_IP, 8081));
      });

      test('every port of an entry with ports [] is allowed', async () => {
        const { out, audit } = await py(s, 'egress-any', `print(json.dumps(http_get('http://${UPSTREAM_IP}:8081/')))`);
        expect(out).toEqual({ status: 200, body: `upstream ${UPSTREAM_IP}:8081` });
        expect(audit).toEqual([]);
      });

      test.each([
        ["the router's own address", `'${ROUTER_IP}'`, ROUTER_IP, 8080],
        ["the router's side of the sandbox's /31 (its gateway)", 'gateway()', null, 8080],
        ['a link-local address behind the router', `'${LINK_LOCAL_IP}'`, LINK_LOCAL_IP, 80],
      ] as const)('%s is unreachable from an egress sandbox and the attempt is audited', async (_, dst, expectDst, port) => {
        const { out, audit } = await py(s, 'egress-any', `d = ${dst}\nprint(json.dumps({'dst': d, 'tcp': tcp(d, ${port})}))`);
        expect(DROPPED).toContain(out.tcp);
        const target: string = expectDst ?? out.dst;
        expect(target).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
        expect(audit).toContainEqual(drop(target, port));
      });

      test('an egress sandbox has IPv6 switched off and no inet6 address on eth0', async () => {
        const { out } = await py(
          s,
          'egress-any',
          `print(json.dumps({
  'all': open('/proc/sys/net/ipv6/conf/all/disable_ipv6').read().strip(),
  'default': open('/proc/sys/net/ipv6/conf/default/disable_ipv6').read().strip(),
  'eth0': open('/proc/sys/net/ipv6/conf/eth0/disable_ipv6').read().strip(),
  'inet6': [l.split()[-1] for l in open('/proc/net/if_inet6').read().splitlines()],
  'links': sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]),
  'addr': eth0_addr(),
}))`,
        );
        expect(out).toMatchObject({ all: '1', default: '1', eth0: '1' });
        expect(out.inet6).not.toContain('eth0');
        expect(out.links).toEqual(['eth0', 'lo']);
        expect(out.addr).toMatch(POOL_ADDRESS);
      });

      test('two concurrent egress sandboxes get different addresses and cannot reach each other, nor can the upstream reach them', async () => {
        // The listener listens while the connector starts and tries, and the upstream tries:
        // longer on a slow machine, within its time limit.
        const LISTEN_S = Math.min(6 * timeScale(), 40);
        let listenerAddr: string | undefined;
        let connector: Awaited<ReturnType<typeof py>> | undefined;
        let fromUpstream: unknown;
        const listener = py(
          s,
          'egress-any',
          `srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('0.0.0.0', ${PEER_PORT}))
srv.listen(8)
srv.settimeout(${LISTEN_S})
accepted = 0
try:
    srv.accept()[0].close()
    accepted = 1
except OSError:
    pass
print(json.dumps({'addr': eth0_addr(), 'accepted': accepted}))`,
        );
        try {
          // Find the listener's address from outside (reading its namespace, sending nothing).
          const addrOf = (ns: string): string | undefined =>
            /inet (\d+\.\d+\.\d+\.\d+)\//.exec(trySh('ip', ['-n', ns, '-4', '-o', 'addr', 'show', 'dev', 'eth0']).stdout)?.[1];
          const found = await pollUntil(
            () => netnsOf(s.pid).map(addrOf),
            (a) => a.length === 1 && a[0] !== undefined,
            scaledMs(5000),
          );
          expect(found).toHaveLength(1);
          listenerAddr = found[0];
          expect(listenerAddr).toMatch(POOL_ADDRESS);
          connector = await py(
            s,
            'egress-any',
            `time.sleep(0.3)\nprint(json.dumps({'addr': eth0_addr(), 'tcp': tcp('${listenerAddr}', ${PEER_PORT})}))`,
          );
          // Nor may anything behind the router open a connection into a sandbox.
          fromUpstream = JSON.parse(pythonIn(topo!.upstream, PY_NET + `print(json.dumps(tcp('${listenerAddr}', ${PEER_PORT})))`));
        } finally {
          // Never leave the listener running into the next test's leftover check.
          await listener.catch(() => undefined);
        }
        const l = await listener;
        expect(l.out.addr).toBe(listenerAddr);
        expect(connector!.out.addr).toMatch(POOL_ADDRESS);
        expect(connector!.out.addr).not.toBe(l.out.addr);
        expect(DROPPED).toContain(connector!.out.tcp);
        expect(fromUpstream).toBe('timeout');
        expect(l.out.accepted).toBe(0);
        expect(connector!.audit).toContainEqual(drop(listenerAddr!, PEER_PORT));
      });

      test('network drops in one result are capped at 32 entries, one per destination and port', async () => {
        const { out, audit } = await py(
          s,
          'egress-any',
          `socks = []
for port in range(20000, 20040):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setblocking(False)
    try:
        c.connect(('${ROUTER_IP}', port))
    except BlockingIOError:
        pass
    socks.append(c)
time.sleep(0.5)
print(json.dumps(len(socks)))`,
        );
        expect(out).toBe(40);
        expect(audit).toHaveLength(32);
        expect(new Set(audit.map((a) => a.port)).size).toBe(32);
        for (const a of audit) {
          expect(a).toMatchObject({ kind: 'network', dst: ROUTER_IP, action: 'drop' });
          expect(a.port).toBeGreaterThanOrEqual(20000);
          expect(a.port).toBeLessThan(20040);
        }
      });
    });

    describe('no CAP_NET_ADMIN or CAP_NET_RAW inside', () => {
      test.each(['default-raw', 'egress-any-raw'])('under %s (AF_NETLINK allowed) the sandbox cannot add an address or a route, nor list or flush nft rules (EPERM)', async (profile) => {
        const { out } = await py(s, profile, PY_NET_ADMIN);
        expect(out).toEqual({
          addr: 'EPERM',
          route: 'EPERM',
          nft_list: { rc: 1, eperm: true },
          nft_flush: { rc: 1, eperm: true },
        });
      });
    });

    describe('socket address families (shipped families: AF_UNIX, AF_INET, AF_INET6)', () => {
      test('under egress-any every other family 0-45 is refused with EAFNOSUPPORT by socket and socketpair (AF_VSOCK and AF_NETLINK included), and the audit counts them', async () => {
        const NR = x86_64Syscalls();
        const [SOCKET_NR, SOCKETPAIR_NR] = [NR.get('socket')!, NR.get('socketpair')!];
        const { out, raw } = await py(s, 'egress-any', pySocketFamilies(SOCKET_NR, SOCKETPAIR_NR));
        expect(out.sweep).toEqual(expectedSweep([SOCKET_FAMILIES.AF_UNIX, SOCKET_FAMILIES.AF_INET, SOCKET_FAMILIES.AF_INET6]));
        expect(out.real).toEqual(EXPECTED_REAL);
        expect((raw.audit as Array<{ kind: string; syscall?: string }>).filter((a) => a.kind === 'seccomp' && /^socket/.test(a.syscall ?? ''))).toEqual([
          { kind: 'seccomp', syscall: 'socket', nr: SOCKET_NR, action: 'errno', count: EXPECTED_REFUSALS.socket },
          { kind: 'seccomp', syscall: 'socketpair', nr: SOCKETPAIR_NR, action: 'errno', count: EXPECTED_REFUSALS.socketpair },
        ]);
      });

      // Where the profile allows AF_NETLINK and AF_PACKET (the -raw profiles), raw and packet
      // sockets still need CAP_NET_RAW, which the sandbox lacks (EPERM); where it does not,
      // seccomp refuses the family before the kernel sees it (EAFNOSUPPORT).
      const refusedByCaps = { raw_icmp: 'EPERM', raw_tcp: 'EPERM', packet: 'EPERM', packet_dgram: 'EPERM' };
      const refusedByFamily = { netlink: 'EAFNOSUPPORT', packet: 'EAFNOSUPPORT' };
      test.each([
        ['default-raw', 'raw or packet sockets (EPERM: no CAP_NET_RAW)', refusedByCaps],
        ['egress-any-raw', 'raw or packet sockets (EPERM: no CAP_NET_RAW)', refusedByCaps],
        ['default', 'netlink or packet sockets (EAFNOSUPPORT, before the kernel sees them)', refusedByFamily],
        ['egress-any', 'netlink or packet sockets (EAFNOSUPPORT, before the kernel sees them)', refusedByFamily],
      ] as const)('under %s the sandbox cannot open %s', async (profile, _what, expected) => {
        const { out } = await py(
          s,
          profile,
          `def sock(*a):
    try:
        socket.socket(*a).close()
        return 'ok'
    except OSError as e:
        return outcome(e)
tries = {
  'raw_icmp': (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
  'raw_tcp': (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
  'packet': (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)),
  'packet_dgram': (socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3)),
  'netlink': (socket.AF_NETLINK, socket.SOCK_RAW, 0),
}
print(json.dumps({k: sock(*tries[k]) for k in ${JSON.stringify(Object.keys(expected))}}))`,
        );
        expect(out).toEqual(expected);
      });
    });

    describe('limits', () => {
      test('with newConnectionsPerSecond 2, ten rapid connects start with successes and later ones are dropped and audited', async () => {
        const { out, audit } = await py(s, 'egress-rate', `print(json.dumps([tcp('${UPSTREAM_IP}', 8080) for _ in range(10)]))`, 30_000);
        expect(out[0]).toBe('connected');
        const dropped = (out as string[]).filter((o) => DROPPED.includes(o));
        expect(dropped.length, JSON.stringify(out)).toBeGreaterThan(0);
        expect((out as string[]).every((o) => o === 'connected' || DROPPED.includes(o)), JSON.stringify(out)).toBe(true);
        expect(audit).toContainEqual(drop(UPSTREAM_IP, 8080));
      });

      test('with maxConnections 2, two held connections succeed and the next ones are dropped and audited', async () => {
        const { out, audit } = await py(
          s,
          'egress-maxconn',
          `held, results = [], []
for _ in range(4):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(('${UPSTREAM_IP}', 8080))
        held.append(s)
        results.append('connected')
    except OSError as e:
        results.append(outcome(e))
        s.close()
print(json.dumps(results))`,
          20_000,
        );
        expect(out.slice(0, 2)).toEqual(['connected', 'connected']);
        for (const o of out.slice(2)) expect(DROPPED).toContain(o);
        expect(audit).toContainEqual(drop(UPSTREAM_IP, 8080));
      });
    });

    describe('dns', () => {
      test("a profile's resolver is the sandbox's nameserver and the only UDP it may reach", async () => {
        const nonce = token();
        const { out, audit } = await py(
          s,
          'egress-dns',
          `print(json.dumps({
  'resolv': open('/etc/resolv.conf').read(),
  'dns': udp('${UPSTREAM_IP}', 53, '${nonce}'),
  'other': udp('${UPSTREAM_IP}', 5353, '${nonce}'),
}))`,
        );
        expect(out.resolv).toMatch(new RegExp(`^nameserver ${UPSTREAM_IP.replace(/\./g, '\\.')}$`, 'm'));
        expect(out.dns).toBe(`echo:${nonce}`);
        expect(out.other).toBe('timeout');
        expect(audit).toEqual([drop(UPSTREAM_IP, 5353)]);
      });

      test('an egress profile without dns writes no nameserver', async () => {
        const { out } = await py(s, 'egress-any', `print(json.dumps(open('/etc/resolv.conf').read()))`);
        expect(out).not.toMatch(/nameserver/);
      });
    });
  });

  describe('pre-warmed egress sandboxes', () => {
    let w: RunningServer;
    beforeAll(async () => {
      w = await start(true);
    });
    afterAll(async () => {
      if (w) await stopAndExpectClean(w);
    });

    test('a pre-warmed egress sandbox drops and audits what a cold one does', async () => {
      // Demand makes the pool fill: invoke until one invocation runs warm.
      const runs: Array<{ warm: unknown; out: any; audit: NetAudit[] }> = [];
      for (let i = 0; i < 12 * timeScale() && !runs.some((r) => r.warm === true); i++) {
        const { out, audit, raw } = await py(w, 'egress-any', `print(json.dumps({'router': tcp('${ROUTER_IP}', 8080), 'up': tcp('${UPSTREAM_IP}', 8081)}))`);
        runs.push({ warm: raw.warm, out, audit });
        await sleep(300);
      }
      expect(runs.some((r) => r.warm === true), `no invocation ran warm: ${JSON.stringify(runs.map((r) => r.warm))}`).toBe(true);
      for (const r of runs) {
        expect(r.out.up).toBe('connected');
        expect(DROPPED).toContain(r.out.router);
        expect(r.audit).toEqual([drop(ROUTER_IP, 8080)]);
      }
    });
  });

  describe('CI jobs with the operator\'s egress allowlist (ZVIZ_JOB_EGRESS)', () => {
    test('a job reaches the allowed cidr:port; the allowed port elsewhere is dropped by nftables and in its record; another port and the host\'s loopback are refused', async () => {
      const s = await start(false, { ZVIZ_JOB_EGRESS: `${UPSTREAM_IP}/32:8080` });
      try {
        const before = hostTcpAccepted;
        const code = PY_NET + `print(json.dumps([http_get('http://${UPSTREAM_IP}:8080/'), tcp('${ROUTER_IP}', 8080), tcp('${UPSTREAM_IP}', 8081), tcp('127.0.0.1', ${hostTcpPort})]))`;
        const started = await s.request('/jobs', { body: { script: `python3 - <<'PY'\n${code}\nPY`, limits: { timeoutMs: scaledMs(30_000, 3_600_000) } } });
        expect(started.status, JSON.stringify(started.body)).toBe(202);
        const id = started.body.id as string;
        const job = await pollUntil(() => s.request(`/jobs/${id}`), (r) => r.status !== 202, scaledMs(60_000), 100);
        expect(job.body, JSON.stringify(job.body)).toMatchObject({ id, status: 'ok', profile: 'ci' });
        // The log is the one line the job printed (the harness parses a body that is JSON).
        const log = (await s.request(`/jobs/${id}/log`)).body as unknown;
        const [allowed, otherAddress, otherPort, hostLoopback] = (typeof log === 'string' ? JSON.parse(log) : log) as unknown[];
        expect(allowed).toEqual({ status: 200, body: `upstream ${UPSTREAM_IP}:8080` });
        // Landlock allows the allowlist's ports anywhere: nftables alone stops another address.
        expect(DROPPED).toContain(otherAddress);
        expect(networkAudit(job.body)).toContainEqual(drop(ROUTER_IP, 8080));
        // Another port: Landlock refuses it before a packet leaves (EACCES), or nftables drops it.
        expect(['EACCES', ...DROPPED]).toContain(otherPort);
        // The job's loopback is its own: nothing reaches the test's server on the host.
        expect(['ECONNREFUSED', 'EACCES']).toContain(hostLoopback);
        expect(hostTcpAccepted).toBe(before);
        await expectNoNetLeftovers(s.pid);
      } finally {
        await stopAndExpectClean(s);
      }
    });
  });

  describe('a server killed in the middle of an egress invocation', () => {
    test("the next server on the same router removes the dead one's namespace, veth, rules and pool lock", async () => {
      const dead = await start(false);
      let next: RunningServer | null = null;
      try {
        const pending = dead
          .invoke({ runtime: 'python', profile: 'egress-any', code: 'import time\ntime.sleep(30)', limits: { timeoutMs: 40_000 } })
          .catch((e: unknown) => e);
        // Poll until all four kinds show: netLeftovers() is not one atomic snapshot.
        const kinds = (): Set<string> => new Set(netLeftovers(dead.pid, topo!.router).map((x) => x.split(' ')[0]!));
        const made = await pollUntil(kinds, (k) => k.size === 4, scaledMs(15_000));
        expect(made).toEqual(new Set(['netns', 'link', 'nft', 'lock']));
        await dead.stop('SIGKILL');
        expect(await pending).toBeInstanceOf(Error);
        // Its supervisor ends the sandbox, but what the dead server made on the host stays…
        expect(netLeftovers(dead.pid, topo!.router)).not.toEqual([]);
        // …until the next server's start-up sweeps it.
        next = await start(false);
        expect(netLeftovers(dead.pid, topo!.router)).toEqual([]);
        expect(next.logs()).toContain('swept network leftovers of a previous server');
        const stopping = next;
        next = null;
        await stopAndExpectClean(stopping);
      } finally {
        await dead.stop('SIGKILL'); // a no-op unless something above failed first
        // After a failure, leave the router clean for the tests after this one: a start sweeps.
        if (next === null && netLeftovers(dead.pid, topo!.router).length > 0) next = await start(false);
        await next?.stop();
      }
    });
  });

  describe('a small pool under steady use', () => {
    test('four egress invocations at a time in a four-pair pool all get a sandbox', async () => {
      // Each new invocation claims the /31 pair another one released a moment before. Some
      // got 503 SANDBOX_UNAVAILABLE: "RTNETLINK answers: File exists" while teardown returned
      // before the old veth was gone (net-teardown.test.ts), and "ENOENT … open
      // '/run/zviz/net/<n>'" from the lock-file race (net-pool-claims.test.ts).
      const small = await start(false, { ZVIZ_NET_POOL: '10.199.1.0/29' });
      try {
        const failures: string[] = [];
        const stream = async (n: number): Promise<void> => {
          for (let i = 0; i < 20; i++) {
            const r = await small.post('/invoke', { runtime: 'python', profile: 'egress-any', code: 'print("ok")' });
            if (r.status !== 200 || r.body.stdout !== 'ok\n') {
              failures.push(`stream ${n} #${i}: ${r.status} ${JSON.stringify(r.body.error ?? r.body.stderr)}`);
            }
          }
        };
        await Promise.all([0, 1, 2, 3].map(stream));
        expect(failures, failures.join('\n')).toEqual([]);
      } finally {
        await stopAndExpectClean(small);
      }
      // 80 cold egress sandboxes: under TCG (time scale 10) they alone outlast the default 10 minutes.
    }, scaledMs(120_000));
  });

  describe('shutdown', () => {
    test('when the only server using the router stops, its inet zviz table goes with it', async () => {
      const s = await start(false);
      try {
        const { audit } = await py(s, 'egress-any', `print(json.dumps(tcp('${ROUTER_IP}', 8080)))`);
        expect(audit).toEqual([drop(ROUTER_IP, 8080)]);
        expect(trySh('ip', ['netns', 'exec', topo!.router, 'nft', 'list', 'table', 'inet', 'zviz']).status).toBe(0);
      } finally {
        await stopAndExpectClean(s);
      }
      const table = trySh('ip', ['netns', 'exec', topo!.router, 'nft', 'list', 'table', 'inet', 'zviz']);
      // The server keeps the table while any pool lock exists (another server may still use
      // it): on a shared host a sibling's lock keeps it, and that is not ours to judge.
      const foreignLocks = readdirSafe(NET_LOCK_DIR);
      if (foreignLocks.length > 0) {
        console.warn(`inet zviz kept: other servers hold pool locks ${foreignLocks.join(' ')}`);
        return;
      }
      expect(table.status, `table inet zviz is still in ${topo!.router}:\n${table.stdout}`).not.toBe(0);
    });
  });
});
