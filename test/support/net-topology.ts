// A private network for layer E's privileged suite: a router namespace (what ZViz is told
// to route sandboxes through, ZVIZ_NET_ROUTER_NETNS) and an "upstream" namespace behind it
// with small HTTP and UDP echo servers. Every address lives inside these two namespaces;
// nothing here touches the host's own network, forwarding or NAT.
//
//   sandbox eth0 ── zvs<i> [router: 10.77.0.1/24, forwarding on] nt-r ══ nt-u [upstream: 10.77.0.2/24, 169.254.77.1/32]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh, trySh } from './shell.js';

export const ROUTER_IP = '10.77.0.1';
export const UPSTREAM_IP = '10.77.0.2';
/** A link-local (metadata-style) address that really answers inside the topology. */
export const LINK_LOCAL_IP = '169.254.77.1';

export interface Endpoint {
  host: string;
  port: number;
}

export interface TopologyOptions {
  /** Pool ZViz takes sandbox /31 pairs from; the upstream routes it back via the router. */
  pool: string;
  http: Endpoint[];
  udpEcho: Endpoint[];
}

export interface Topology {
  router: string;
  upstream: string;
  /** pid of the upstream's server process (ours to end). */
  serverPid: number;
  destroy: () => void;
}

/** Why the topology cannot be built here, or null. */
export function networkToolsMissing(): string | null {
  for (const [cmd, args] of [
    ['ip', ['-V']],
    ['nft', ['--version']],
    ['python3', ['--version']],
  ] as const) {
    if (trySh(cmd, [...args]).status !== 0) return `\`${cmd}\` is not available`;
  }
  return null;
}

/** HTTP servers answer `upstream <host>:<port>`; UDP servers echo `echo:<payload>`. */
const UPSTREAM_SERVER_PY = `
import http.server, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ('upstream %s:%d' % self.server.server_address).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
def split(spec):
    return [(h, int(p)) for h, p in (x.rsplit(':', 1) for x in spec.split(',') if x)]
for addr in split(sys.argv[1]):
    srv = http.server.ThreadingHTTPServer(addr, H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
def echo(sock):
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(b'echo:' + data, peer)
for addr in split(sys.argv[2]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    threading.Thread(target=echo, args=(s,), daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
`;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Builds router + upstream namespaces named `nettest-{r,u}-<tag>` and starts the servers.
 * On any failure everything made so far is removed before the error is thrown.
 */
export async function createTopology(tag: string, opts: TopologyOptions): Promise<Topology> {
  const router = `nettest-r-${tag}`;
  const upstream = `nettest-u-${tag}`;
  const scratch = mkdtempSync(join(tmpdir(), 'nettest-'));
  let child: ChildProcess | null = null;
  const destroy = (): void => {
    if (child?.pid !== undefined && isAlive(child.pid)) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    // Deleting a namespace removes its veth end (and with it the peer), routes and nft tables.
    for (const ns of [router, upstream]) trySh('ip', ['netns', 'del', ns]);
    rmSync(scratch, { recursive: true, force: true });
  };
  try {
    sh('ip', ['netns', 'add', router]);
    sh('ip', ['netns', 'add', upstream]);
    // The veth is created inside the router namespace and its peer placed in the upstream
    // one: neither end ever exists in the host's namespace.
    sh('ip', ['-n', router, '-batch', '-'], [
      `link add nt-r type veth peer name nt-u netns ${upstream}`,
      `addr add ${ROUTER_IP}/24 dev nt-r`,
      'link set lo up',
      'link set nt-r up',
      `route add ${LINK_LOCAL_IP}/32 via ${UPSTREAM_IP}`,
    ].join('\n') + '\n');
    sh('ip', ['-n', upstream, '-batch', '-'], [
      `addr add ${UPSTREAM_IP}/24 dev nt-u`,
      `addr add ${LINK_LOCAL_IP}/32 dev nt-u`,
      'link set lo up',
      'link set nt-u up',
      `route add ${opts.pool} via ${ROUTER_IP}`,
    ].join('\n') + '\n');
    // Forwarding only in our router namespace (per-namespace sysctl), never the host's.
    sh('ip', ['netns', 'exec', router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);

    const script = join(scratch, 'upstream.py');
    writeFileSync(script, UPSTREAM_SERVER_PY);
    const fmt = (eps: Endpoint[]): string => eps.map((e) => `${e.host}:${e.port}`).join(',');
    const started = spawn('ip', ['netns', 'exec', upstream, 'python3', '-u', script, fmt(opts.http), fmt(opts.udpEcho)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = started;
    await new Promise<void>((res, rej) => {
      let out = '';
      const timer = setTimeout(() => rej(new Error(`upstream servers did not start within 10 s:\n${out}`)), 10_000);
      const onData = (d: Buffer): void => {
        out += d.toString();
        if (out.includes('ready')) {
          clearTimeout(timer);
          res();
        }
      };
      started.stdout!.on('data', onData);
      started.stderr!.on('data', onData);
      started.on('exit', (code) => {
        clearTimeout(timer);
        rej(new Error(`upstream servers exited with ${code}:\n${out}`));
      });
    });
    // `ip netns exec` execs its command: the pid is python's own.
    return { router, upstream, serverPid: started.pid!, destroy };
  } catch (e) {
    destroy();
    throw e;
  }
}

/**
 * Runs a Python probe in one of our namespaces (as a control: shows a destination is
 * really reachable there, so a sandbox that cannot reach it is stopped by ZViz).
 */
export function pythonIn(ns: string, code: string): string {
  return sh('ip', ['netns', 'exec', ns, 'python3', '-c', code]);
}
