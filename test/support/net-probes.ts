// What layer E's suite runs inside sandboxes (Python probes that print JSON) and what it
// reads from outside: the network audit of a result, and what ZViz made for a server's
// sandboxes in the host's and the router's namespaces that is still there.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NET_LOCK_DIR, netnsName } from '../../worker-pool/host/names.js';
import { sh, trySh } from './shell.js';

/** Probe outcomes that mean "the packet never got an answer": nftables dropped it. */
export const DROPPED = ['timeout', 'EHOSTUNREACH'];

/**
 * Python helpers for probes inside a sandbox (and, as controls, in our namespaces).
 * Outcomes are 'connected', 'timeout' or an errno name: Landlock refuses with EACCES,
 * a closed port answers ECONNREFUSED, an nftables drop times out.
 */
export const PY_NET = `
import errno, fcntl, json, socket, struct, time, urllib.error, urllib.request
def outcome(e):
    if isinstance(e, socket.timeout):
        return 'timeout'
    return errno.errorcode.get(e.errno, str(e.errno))
def tcp(host, port, timeout=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return 'connected'
    except OSError as e:
        return outcome(e)
    finally:
        s.close()
def udp(host, port, payload, timeout=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(payload.encode(), (host, port))
        return s.recvfrom(2048)[0].decode()
    except OSError as e:
        return outcome(e)
    finally:
        s.close()
def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return {'status': r.status, 'body': r.read().decode()}
    except urllib.error.URLError as e:
        return {'error': outcome(e.reason) if isinstance(e.reason, OSError) else str(e.reason)}
    except OSError as e:
        return {'error': outcome(e)}
def eth0_addr():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24])  # SIOCGIFADDR
    except OSError as e:
        return outcome(e)
    finally:
        s.close()
def gateway():
    for line in open('/proc/net/route').read().splitlines()[1:]:
        f = line.split()
        if f[1] == '00000000':
            return socket.inet_ntoa(struct.pack('<I', int(f[2], 16)))
    return None
def read(path):
    try:
        return open(path).read()
    except OSError as e:
        return outcome(e)
`;

/**
 * Adds an address and a route over rtnetlink, lists and flushes nft rules. iproute2's `ip`
 * cannot even start in a sandbox (it calls capset, which seccomp refuses), so it would
 * prove nothing; the kernel checks CAP_NET_ADMIN over the namespace before it looks at the
 * request, so the answer is EPERM exactly when the capability is missing.
 */
export const PY_NET_ADMIN = `
import subprocess
def rtnl(msg_type, body):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    try:
        s.bind((0, 0))
        flags = 0x1 | 0x4 | 0x200 | 0x400  # REQUEST | ACK | EXCL | CREATE
        s.send(struct.pack('=IHHII', 16 + len(body), msg_type, flags, 1, 0) + body)
        data = s.recv(65536)
        if struct.unpack('=H', data[4:6])[0] != 2:  # NLMSG_ERROR carries the ack
            return 'no ack'
        err = -struct.unpack('=i', data[16:20])[0]
        return 'ok' if err == 0 else errno.errorcode.get(err, str(err))
    except OSError as e:
        return outcome(e)
    finally:
        s.close()
def attr(kind, value):
    return struct.pack('=HH', 4 + len(value), kind) + value
lo = socket.if_nametoindex('lo')
addr = socket.inet_aton('10.123.0.9')
new_addr = struct.pack('=BBBBI', socket.AF_INET, 32, 0, 0, lo) + attr(2, addr) + attr(1, addr)  # RTM_NEWADDR, IFA_LOCAL, IFA_ADDRESS
new_route = struct.pack('=BBBBBBBBI', socket.AF_INET, 24, 0, 0, 254, 4, 0, 1, 0) + attr(1, socket.inet_aton('10.123.0.0')) + attr(4, struct.pack('=I', lo))  # main table, static, unicast; RTA_DST, RTA_OIF
def nft(*args):
    r = subprocess.run(['/usr/sbin/nft', *args], capture_output=True, text=True)
    return {'rc': r.returncode, 'eperm': 'Operation not permitted' in r.stdout + r.stderr}
print(json.dumps({
  'addr': rtnl(20, new_addr),
  'route': rtnl(24, new_route),
  'nft_list': nft('list', 'ruleset'),
  'nft_flush': nft('flush', 'ruleset'),
}))
`;

export interface NetAudit {
  kind: 'network';
  dst: string;
  port: number | null;
  action: 'drop';
}

export const drop = (dst: string, port: number | null): NetAudit => ({ kind: 'network', dst, port, action: 'drop' });

/** The network entries of a result's audit list. */
export function networkAudit(r: { audit?: unknown[] }): NetAudit[] {
  return (r.audit ?? []).filter((a): a is NetAudit => (a as { kind?: string }).kind === 'network');
}

/** Egress namespaces of server `pid` (named `zviz-<pid>-<invocation>`). */
export function netnsOf(pid: number): string[] {
  return sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(netnsName(`${pid}-`)));
}

function linksNamedZv(ipArgs: string[]): string[] {
  return sh('ip', [...ipArgs, '-o', 'link'])
    .split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
    .filter((n) => n.startsWith('zv'));
}

/**
 * What ZViz made for server `pid`'s sandboxes and has not removed: its namespaces, any
 * `zv*` link in the router's or the host's namespace, per-sandbox chains, sets and map
 * elements in the router's `inet zviz` table (chains sb-/sbd-, drop sets d4-/d6-/da-), and pool locks holding its pid. [] when clean.
 */
export function netLeftovers(pid: number, router: string): string[] {
  const found = netnsOf(pid).map((n) => `netns ${n}`);
  for (const n of linksNamedZv(['-n', router])) found.push(`link ${n} in ${router}`);
  for (const n of linksNamedZv([])) found.push(`link ${n} in the host namespace`);
  const table = trySh('ip', ['netns', 'exec', router, 'nft', 'list', 'table', 'inet', 'zviz']);
  if (table.status === 0) {
    for (const m of table.stdout.matchAll(/\b(chain|set) ((?:sb|sbd|d[a-z0-9])-\d+)/g)) found.push(`nft ${m[1]} ${m[2]}`);
    for (const m of table.stdout.matchAll(/elements = \{([^}]*)\}/g)) {
      if (m[1]!.includes('zvs')) found.push(`nft map elements ${m[1]!.trim()}`);
    }
  }
  let locks: string[] = [];
  try {
    locks = readdirSync(NET_LOCK_DIR);
  } catch {
    // no lock directory: nothing claimed
  }
  for (const f of locks) {
    try {
      if (Number(readFileSync(join(NET_LOCK_DIR, f), 'utf8')) === pid) found.push(`lock ${NET_LOCK_DIR}/${f}`);
    } catch {
      // released while we looked
    }
  }
  return found;
}
