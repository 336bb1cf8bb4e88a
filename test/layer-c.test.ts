// Layer C, privileged: Landlock's filesystem, network and scope rules (native/src/landlock.c,
// worker-pool/landlock.ts) and the AppArmor/SELinux detection, checked from inside real
// sandboxes and from the server's start-up. Where a mount, DAC or the network namespace
// would also refuse, the test picks a case where they would allow it, so that what it sees
// is Landlock's answer — or says that it cannot.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverLeftovers } from './support/leftovers.js';
import { makeProfilesDir, type ProfilesDir } from './support/profiles.js';
import { processMarker, PY_SYSCALL, pyJson, pyNameSelf, run, sandboxByMarker } from './support/sandboxes.js';
import { privilegedReason, repoRoot, type RunningServer, startServer } from './support/server.js';
import { describeWhere } from './support/applies.js';
import { hasAppArmor, hasIa32, hasSelinux, hasX32, landlockAbi } from './support/machine.js';
import { pollFor, timeScale, token } from './support/wait.js';
import { unenforcedRights } from '../worker-pool/landlock.js';

const skip = privilegedReason();
/** The newest Landlock ABI this suite knows, or the host's own when older: never assumed. */
const HOST_ABI = Math.min(landlockAbi(), 7);
const HOST_PYTHON = '/usr/bin/python3';
/** This kernel's Landlock ABI (landlock_create_ruleset with LANDLOCK_CREATE_RULESET_VERSION), -1 without Landlock. */
const HOST_LANDLOCK_ABI = Number(
  spawnSync(HOST_PYTHON, ['-c', 'import ctypes; print(ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1))'], { encoding: 'utf8' }).stdout.trim() || -1,
);
const HOST_LSMS = existsSync('/sys/kernel/security/lsm') ? readFileSync('/sys/kernel/security/lsm', 'utf8').trim().split(',') : [];
const HOST_APPARMOR = HOST_LSMS.includes('apparmor');
/** Whether the AppArmor profile ZViz ships (profiles/apparmor/zviz-function) is loaded here. */
const ZVIZ_FUNCTION_LOADED =
  HOST_APPARMOR &&
  existsSync('/sys/kernel/security/apparmor/profiles') &&
  readFileSync('/sys/kernel/security/apparmor/profiles', 'utf8').split('\n').some((l) => l.startsWith('zviz-function ('));
/**
 * Tests of rights this kernel's Landlock cannot enforce (truncate needs ABI 3, TCP ports 4,
 * scopes 6) skip, naming the ABI they need and the one here; everything else runs.
 */
function needsAbi(abi: number): string | null {
  return HOST_LANDLOCK_ABI < abi ? `needs Landlock ABI ≥ ${abi}: this kernel has ${HOST_LANDLOCK_ABI}` : null;
}
/** Start-up may take this much longer on a slow (emulated) machine. */
const TIME_SCALE = timeScale();

describe.skipIf(skip !== null)('layer C: Landlock, seen from inside real sandboxes', () => {
  let profiles: ProfilesDir;
  let s: RunningServer;

  beforeAll(async () => {
    profiles = makeProfilesDir({
      // The host's /etc over the synthesized one: the mount view no longer hides anything
      // there, so what stops a read is Landlock (and DAC, where the mode says so).
      'etc-bind': (p) => {
        p.filesystem.readOnlyBinds = [{ source: '/etc', target: '/etc' }];
      },
      ports: (p) => {
        p.landlock.tcpBind = [8080];
        p.landlock.tcpConnect = [8080];
      },
      // Exactly what this kernel offers: a strict profile must start and run here.
      'strict-abi': (p) => {
        p.landlock.minAbi = HOST_ABI;
        p.landlock.bestEffort = false;
      },
    });
    s = await startServer({ env: { ZVIZ_PROFILES_DIR: profiles.dir } });
  });

  let stopped = false;
  afterAll(async () => {
    if (s && !stopped) await s.stop();
    profiles?.remove();
  });

  describe('filesystem: with the host /etc bound read-only in the view', () => {
    let out: Record<string, { exists: boolean; mode: string; accessR: boolean; size: number; read: string }>;

    beforeAll(async () => {
      ({ out } = await pyJson(s, `${PY_SYSCALL}
res = {}
for p in ['/etc/debian_version', '/etc/issue', '/etc/adduser.conf', '/etc/shadow', '/etc/passwd', '/etc/group']:
    if not os.path.exists(p):
        continue
    st = os.stat(p)
    res[p] = {'exists': True, 'mode': oct(st.st_mode & 0o777), 'size': st.st_size,
              # access(2) is not checked by Landlock: it shows what DAC alone would say
              'accessR': os.access(p, os.R_OK), 'read': attempt(lambda: open(p, 'rb').read())}
print(json.dumps(res))`, { profile: 'etc-bind' }));
    });

    // Regular, world-readable host files that are not on Landlock's /etc list.
    it.each(['/etc/debian_version', '/etc/issue', '/etc/adduser.conf'])(
      'reading %s fails with EACCES although its mode lets everyone read it (Landlock alone)',
      (p) => {
        if (!existsSync(p)) return; // not on this host
        expect(out[p]).toMatchObject({ exists: true, accessR: true, read: 'EACCES' });
        expect(Number.parseInt(out[p]!.mode.slice(2), 8) & 0o004, 'readable by others').toBe(0o004);
        expect(out[p]!.size).toBe(statSync(p).size); // it is the host's file
      },
    );

    it('reading /etc/passwd, which is on the list, works', () => {
      expect(out['/etc/passwd']).toMatchObject({ read: 'ok', size: statSync('/etc/passwd').size });
      expect(out['/etc/group']).toMatchObject({ read: 'ok' });
    });

    it('reading /etc/shadow fails with EACCES', () => {
      expect(out['/etc/shadow']).toMatchObject({ exists: true, read: 'EACCES' });
    });
  });

  // Truncation is a Landlock right from ABI 3, TCP ports from 4, scopes from 6: a kernel without
  // them cannot show them, and says so in the title.
  describeWhere(needsAbi(3), 'filesystem: writes and truncation', () => {
    let out: Record<string, string>;

    beforeAll(async () => {
      ({ out } = await pyJson(s, `${PY_SYSCALL}
res = {}
for p in ['/tmp/x', '/dev/shm/x', '/fn/x', '/etc/x', '/usr/x', '/x', '/tmp/../x']:
    res['write ' + p] = attempt(lambda: open(p, 'w').write('x'))
fn_files = sorted(os.path.join(d, f) for d, _, fs in os.walk('/fn') for f in fs)
res['/fn file'] = fn_files[0] if fn_files else None
for p in [res['/fn file'] or '/fn/main.py', '/etc/passwd', '/usr/bin/env']:
    res['readable ' + p] = str(os.access(p, os.R_OK))
    res['truncate ' + p] = attempt(lambda: os.truncate(p, 0))
    res['O_TRUNC ' + p] = attempt(lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)))
open('/tmp/mine', 'w').write('abc')
res['truncate /tmp/mine'] = attempt(lambda: os.truncate('/tmp/mine', 1))
res['/tmp/mine after'] = open('/tmp/mine').read()
# /proc is mounted read-write and /proc/self/* belongs to the function: only Landlock,
# which grants /proc read rights only, stands in the way.
for p in ['/proc/self/comm', '/proc/self/coredump_filter']:
    res['accessW ' + p] = str(os.access(p, os.W_OK))
    res['write ' + p] = attempt(lambda: os.close(os.open(p, os.O_WRONLY)))
    res['truncate ' + p] = attempt(lambda: os.truncate(p, 0))
    res['O_TRUNC ' + p] = attempt(lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)))
res['/proc mount'] = [l.split()[5] for l in open('/proc/self/mountinfo') if l.split()[4] == '/proc'][0].split(',')[0]
print(json.dumps(res))`));
    });

    it('writing /tmp and /dev/shm works', () => {
      expect(out['write /tmp/x']).toBe('ok');
      expect(out['write /dev/shm/x']).toBe('ok');
      expect(out['truncate /tmp/mine']).toBe('ok');
      expect(out['/tmp/mine after']).toBe('a');
    });

    it.each(['/fn/x', '/etc/x', '/usr/x', '/x', '/tmp/../x'])('writing %s fails', (p) => {
      expect(['EACCES', 'EROFS']).toContain(out[`write ${p}`]);
    });

    it.each(['the function file in /fn', '/etc/passwd', '/usr/bin/env'])('truncating %s, a readable file, fails', (which) => {
      const p = which.startsWith('/') ? which : out['/fn file']!;
      expect(p, 'no file under /fn').toBeTruthy();
      expect(out[`readable ${p}`]).toBe('True');
      expect(['EACCES', 'EROFS']).toContain(out[`truncate ${p}`]);
      expect(['EACCES', 'EROFS']).toContain(out[`O_TRUNC ${p}`]);
    });

    const truncateChecked = HOST_LANDLOCK_ABI >= 3;
    it.each(['/proc/self/comm', '/proc/self/coredump_filter'])(
      `writing or truncating %s, which the mount and DAC allow, fails with EACCES (Landlock alone)${
        truncateChecked ? '' : `; truncate(2) unchecked: Landlock ABI ${HOST_LANDLOCK_ABI} < 3 cannot restrict it`
      }`,
      (p) => {
        expect(out['/proc mount']).toBe('rw');
        expect(out[`accessW ${p}`]).toBe('True');
        expect(out[`write ${p}`]).toBe('EACCES');
        if (truncateChecked) expect(out[`truncate ${p}`]).toBe('EACCES');
        expect(out[`O_TRUNC ${p}`]).toBe('EACCES');
      },
    );

    it('control: without Landlock, an unprivileged owner may write and truncate its /proc/self/comm', () => {
      const r = spawnSync(
        'setpriv',
        ['--reuid=65534', '--regid=65534', '--clear-groups', HOST_PYTHON, '-c', `
import os
for p in ['/proc/self/comm', '/proc/self/coredump_filter']:
    os.close(os.open(p, os.O_WRONLY)); os.truncate(p, 0); os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
print('ok')`],
        { encoding: 'utf8', timeout: 10_000 },
      );
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('ok\n');
    });
  });

  describeWhere(needsAbi(4), 'network (in the sandbox’s own network namespace)', () => {
    const PY_NET = `${PY_SYSCALL}
import socket, threading
def bind(port, family=socket.AF_INET, host='127.0.0.1'):
    s = socket.socket(family)
    r = attempt(lambda: s.bind((host, port)))
    return r, s
def connect(port, family=socket.AF_INET, host='127.0.0.1'):
    s = socket.socket(family); s.settimeout(3)
    r = attempt(lambda: s.connect((host, port)))
    s.close()
    return r
`;

    it('binding or connecting TCP ports the profile does not grant fails with EACCES (not ECONNREFUSED)', async () => {
      const { out } = await pyJson(s, `${PY_NET}
print(json.dumps({'bind 8080': bind(8080)[0], 'bind 0': bind(0)[0], 'bind [::1]:8080': bind(8080, socket.AF_INET6, '::1')[0],
                  'connect 8080': connect(8080), 'connect [::1]:8080': connect(8080, socket.AF_INET6, '::1'),
                  'udp bind 8080': attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(('127.0.0.1', 8080)))}))`);
      expect(out).toEqual({
        'bind 8080': 'EACCES',
        'bind 0': 'EACCES',
        'bind [::1]:8080': 'EACCES',
        'connect 8080': 'EACCES',
        'connect [::1]:8080': 'EACCES',
        'udp bind 8080': 'ok', // Landlock handles TCP only; UDP stays with the netns
      });
    });

    it('a profile granting tcpBind and tcpConnect 8080 lets a server and a client talk on it, and nothing else', async () => {
      const { out } = await pyJson(s, `${PY_NET}
res = {}
r, srv = bind(8080)
res['bind 8080'] = r
srv.listen(1)
got = []
def serve():
    c, _ = srv.accept(); got.append(c.recv(16).decode()); c.close()
t = threading.Thread(target=serve); t.start()
c = socket.socket(); c.settimeout(3)
res['connect 8080'] = attempt(lambda: (c.connect(('127.0.0.1', 8080)), c.sendall(b'ping')))
c.close(); t.join(5)
res['served'] = got
res['bind 8081'] = bind(8081)[0]
res['connect 8081'] = connect(8081)
print(json.dumps(res))`, { profile: 'ports' });
      expect(out).toEqual({ 'bind 8080': 'ok', 'connect 8080': 'ok', served: ['ping'], 'bind 8081': 'EACCES', 'connect 8081': 'EACCES' });
    });
  });

  describeWhere(needsAbi(6), 'scopes', () => {
    let canary: ChildProcess | null = null;
    const name = `zviz-canary-${token()}`;

    beforeAll(async () => {
      // A process of the test, on the host, listening on an abstract unix socket.
      canary = spawn(HOST_PYTHON, ['-c', `
import socket, sys
s = socket.socket(socket.AF_UNIX); s.bind('\\0' + sys.argv[1]); s.listen(8)
print('listening', flush=True)
while True:
    c, _ = s.accept(); c.sendall(b'canary'); c.close()`, name], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((res, rej) => {
        canary!.stdout!.once('data', () => res());
        canary!.once('exit', (code) => rej(new Error(`canary exited with ${code}`)));
      });
    });

    afterAll(() => {
      if (canary?.pid && canary.exitCode === null) process.kill(canary.pid, 'SIGKILL');
    });

    it('as deployed, the sandbox cannot connect to an abstract unix socket listening on the host', async () => {
      // Control: the host can.
      const host = spawnSync(HOST_PYTHON, ['-c', `
import socket, sys
c = socket.socket(socket.AF_UNIX); c.connect('\\0' + sys.argv[1]); print(c.recv(16).decode())`, name], { encoding: 'utf8' });
      expect(host.stdout).toBe('canary\n');
      const { out } = await pyJson(s, `${PY_SYSCALL}
import socket
c = socket.socket(socket.AF_UNIX)
res = {'canary': attempt(lambda: c.connect('\\0' + ${JSON.stringify(name)}))}
srv = socket.socket(socket.AF_UNIX); srv.bind('\\0own'); srv.listen(1)
res['own abstract socket'] = attempt(lambda: socket.socket(socket.AF_UNIX).connect('\\0own'))
print(json.dumps(res))`);
      expect(['ECONNREFUSED', 'ENOENT', 'EPERM']).toContain(out.canary);
      expect(out['own abstract socket']).toBe('ok');
    });

    it('with only Landlock in the way — the canary in the sandbox’s own network namespace — connecting fails with EPERM', async () => {
      // The issue asks for the sandbox to join a netns the test created; ZViz has no such
      // option, so the test does the converse: it starts a second canary inside the
      // sandbox's network namespace (nsenter --net, as host root). Abstract sockets are per
      // netns, so the namespace no longer separates them and an abstract socket has no DAC:
      // what refuses the connection is Landlock's abstract-unix scope (the canary is
      // outside the function's domain).
      const inner = `zviz-canary-${token()}`;
      const marker = processMarker();
      const pending = run(s, 'python', `${PY_SYSCALL}
import socket, time
${pyNameSelf(marker)}
name = ${JSON.stringify(inner)}
res = {'seen': False}
deadline = time.time() + 10
while time.time() < deadline and not res['seen']:
    res['seen'] = ('@' + name) in open('/proc/net/unix').read()
    time.sleep(0.02)
res['stream'] = attempt(lambda: socket.socket(socket.AF_UNIX).connect('\\0' + name))
res['dgram'] = attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'x', '\\0' + name + '-dgram'))
srv = socket.socket(socket.AF_UNIX); srv.bind('\\0' + name + '-own'); srv.listen(1)
res['own'] = attempt(lambda: socket.socket(socket.AF_UNIX).connect('\\0' + name + '-own'))
print(json.dumps(res))`, { limits: { timeoutMs: 20_000 } });
      const fn = await pollFor(() => sandboxByMarker(s.pid, marker)?.fn, 5000);
      expect(fn, 'the function process was not found on the host').not.toBeNull();
      const canary = spawn('nsenter', [`--net=/proc/${fn!.pid}/ns/net`, HOST_PYTHON, '-c', `
import socket, sys, threading
s = socket.socket(socket.AF_UNIX); s.bind('\\0' + sys.argv[1]); s.listen(8)
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); d.bind('\\0' + sys.argv[1] + '-dgram')
print('listening', flush=True)
while True:
    c, _ = s.accept(); c.sendall(b'canary'); c.close()`, inner], { stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        await new Promise<void>((res, rej) => {
          canary.stdout!.once('data', () => res());
          canary.once('exit', (code) => rej(new Error(`inner canary exited with ${code}`)));
        });
        // Control: from the same namespace, without Landlock, the canary answers.
        const control = spawnSync('nsenter', [`--net=/proc/${fn!.pid}/ns/net`, HOST_PYTHON, '-c', `
import socket, sys
c = socket.socket(socket.AF_UNIX); c.connect('\\0' + sys.argv[1]); print(c.recv(16).decode())`, inner], { encoding: 'utf8', timeout: 5000 });
        expect(control.stdout).toBe('canary\n');
        const r = await pending;
        expect(r.status, r.stderr).toBe('ok');
        expect(JSON.parse(r.stdout)).toEqual({ seen: true, stream: 'EPERM', dgram: 'EPERM', own: 'ok' });
      } finally {
        if (canary.pid && canary.exitCode === null) process.kill(canary.pid, 'SIGKILL');
      }
    });

    it('kill() of a pid outside the function’s Landlock domain (the sandbox init, pid 1) fails with EPERM; killing its own child works', async () => {
      const { out } = await pyJson(s, `${PY_SYSCALL}
import signal, time
res = {'kill(1, SIGTERM)': attempt(lambda: os.kill(1, signal.SIGTERM)), 'kill(1, 0)': attempt(lambda: os.kill(1, 0))}
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
res['kill(child, SIGTERM)'] = attempt(lambda: os.kill(pid, signal.SIGTERM))
_, st = os.waitpid(pid, 0)
res['child died of'] = os.WTERMSIG(st) if os.WIFSIGNALED(st) else None
print(json.dumps(res))`);
      // Note: init also runs under another uid (0 in the namespace, the function is 1000),
      // so DAC refuses this too; no process of the sandbox shares the function's uid
      // outside its Landlock domain, so Landlock's signal scope cannot be isolated here.
      expect(out).toEqual({ 'kill(1, SIGTERM)': 'EPERM', 'kill(1, 0)': 'EPERM', 'kill(child, SIGTERM)': 'ok', 'child died of': 15 });
    });

    it('kill() of a process with the function’s own uid, in its pid namespace but outside its Landlock domain, fails with EPERM (Landlock alone)', async () => {
      // The test places that process (nsenter into the sandbox's user and pid namespaces as
      // uid 1000, the function's uid): DAC would allow the signal, Landlock's signal scope
      // does not.
      const marker = processMarker();
      const pending = run(s, 'python', `${PY_SYSCALL}
import signal, time
${pyNameSelf(marker)}
res = {}
deadline = time.time() + 10
while time.time() < deadline and 'target' not in res:
    for p in os.listdir('/proc'):
        try:
            if p.isdigit() and open(f'/proc/{p}/comm').read().strip() == 'sleep':
                res['target'] = {'uid': os.stat(f'/proc/{p}').st_uid, 'mine': os.getuid()}
                res['kill(SIGTERM)'] = attempt(lambda: os.kill(int(p), signal.SIGTERM))
                res['kill(0)'] = attempt(lambda: os.kill(int(p), 0))
        except OSError:
            pass
    time.sleep(0.02)
print(json.dumps(res))`, { limits: { timeoutMs: 20_000 } });
      const fn = await pollFor(() => sandboxByMarker(s.pid, marker)?.fn, 5000);
      expect(fn, 'the function process was not found on the host').not.toBeNull();
      const outsider = spawn('nsenter', ['-t', String(fn!.pid), '--user', '--pid', '--setuid', '1000', '--setgid', '1000', '/usr/bin/sleep', '60'], {
        stdio: 'ignore',
      });
      const gone = new Promise<void>((res) => outsider.once('exit', () => res()));
      try {
        const r = await pending;
        expect(r.status, r.stderr).toBe('ok');
        expect(JSON.parse(r.stdout)).toEqual({ target: { uid: 1000, mine: 1000 }, 'kill(SIGTERM)': 'EPERM', 'kill(0)': 'EPERM' });
        // The outsider lived in the sandbox's pid namespace: it died with it.
        await Promise.race([gone, new Promise((res) => setTimeout(res, 3000))]);
        expect(outsider.exitCode !== null || outsider.signalCode !== null).toBe(true);
      } finally {
        if (outsider.pid && outsider.exitCode === null && outsider.signalCode === null) process.kill(outsider.pid, 'SIGKILL');
      }
    });
  });

  it(`GET /host reports this host's Landlock ABI and LSMs [this host: Landlock ABI ${HOST_ABI}, AppArmor ${hasAppArmor() ? 'on' : 'off'}, SELinux ${hasSelinux() ? 'on' : 'off'}]`, async () => {
    // A harness with the admin API sends its admin token on /host (test/compat-auth.ts).
    const res = await fetch(`${s.url}/host`);
    expect(res.status).toBe(200);
    const facts = (await res.json()) as any;
    expect(facts.landlock).toMatchObject({ abi: HOST_ABI, unenforced: unenforcedRights(HOST_ABI) });
    expect(facts.lsm).toMatchObject({ apparmor: hasAppArmor(), selinux: hasSelinux() });
    expect(facts.syscallAbis).toMatchObject({ ia32: hasIa32(), x32: hasX32() });
  });

  it(`a profile requiring this host's Landlock ABI without best effort runs here, and reports nothing unenforced [this host: ABI ${HOST_ABI}]`, async () => {
    const r = await run(s, 'bash', 'echo strict', { profile: 'strict-abi' });
    expect(r).toMatchObject({ status: 'ok', stdout: 'strict\n' });
  });

  it('stopping the server leaves no cgroup, supervisor or mount of it behind', async () => {
    stopped = true;
    expect(await s.stop()).toBe(0);
    expect(serverLeftovers(s)).toEqual([]);
  });
});

/** Runs the built server until it exits or starts listening (then stops it); 20 s (× ZVIZ_TEST_TIME_SCALE) at most. */
async function startUp(env: Record<string, string>): Promise<{ code: number | null; listened: boolean; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(repoRoot, 'dist', 'server', 'main.js')], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ZVIZ_HOST: '127.0.0.1', ZVIZ_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const listened = await new Promise<boolean>((res) => {
    const timer = setTimeout(() => res(false), 20_000 * TIME_SCALE);
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('"msg":"listening"')) {
        clearTimeout(timer);
        res(true);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      res(false);
    });
  });
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  const code = await exited;
  return { code, listened, stdout, stderr };
}

/** Starts the server with one extra profile (`make` edits the default into it) and returns how start-up went. */
async function startUpWith(name: string, make: Parameters<typeof makeProfilesDir>[0][string]): Promise<Awaited<ReturnType<typeof startUp>>> {
  const profiles = makeProfilesDir({ [name]: make });
  const stateDir = mkdtempSync(join(tmpdir(), 'zviz-layer-c-state-'));
  chmodSync(stateDir, 0o711); // as the harness does: sandboxes must reach their mount point
  try {
    return await startUp({ ZVIZ_STATE_DIR: stateDir, ZVIZ_PROFILES_DIR: profiles.dir });
  } finally {
    profiles.remove();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

describeWhere(
  HOST_APPARMOR ? null : 'needs AppArmor: this kernel has none',
  'layer C: start-up refuses an AppArmor profile the kernel has not loaded',
  () => {
    it('a profile naming an unloaded AppArmor profile stops start-up with one line saying how to load it', async () => {
      const missing = `zviz-not-loaded-${token()}`;
      const r = await startUpWith('confined', (p) => (p.apparmorProfile = missing));
      expect(r.listened, `the server started listening:\n${r.stderr}`).toBe(false);
      expect(r.code).not.toBe(0);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toContain(`Profile 'confined' names AppArmor profile '${missing}', which is not loaded`);
      expect(lines[0]).toContain('apparmor_parser -r');
    });
  },
  skip,
);

describeWhere(
  ZVIZ_FUNCTION_LOADED ? null : 'needs AppArmor with profiles/apparmor/zviz-function loaded: not here',
  'layer C: AppArmor confines functions',
  () => {
    let profiles: ProfilesDir;
    let s: RunningServer;
    beforeAll(async () => {
      profiles = makeProfilesDir({ confined: (p) => (p.apparmorProfile = 'zviz-function') });
      s = await startServer({ env: { ZVIZ_PROFILES_DIR: profiles.dir } });
    });
    afterAll(async () => {
      await s?.stop();
      profiles?.remove();
    });

    it("the function runs under zviz-function: its /proc/self/attr/current names it, and the same code unconfined names 'unconfined'", async () => {
      const code = `print(open('/proc/self/attr/current').read().strip())`;
      const confined = await run(s, 'python', code, { profile: 'confined' });
      expect(confined).toMatchObject({ status: 'ok', stdout: 'zviz-function (enforce)\n' });
      const plain = await run(s, 'python', code);
      expect(plain).toMatchObject({ status: 'ok', stdout: 'unconfined\n' });
    });

    it('the profile denies /proc/self/mountinfo with EACCES (unconfined it reads) while /proc/self/status stays readable', async () => {
      const code = `${PY_SYSCALL}
res = {}
for p in ['/proc/self/mountinfo', '/proc/self/status']:
    res[p] = attempt(lambda: open(p).read(1))
print(json.dumps(res))`;
      const { out } = await pyJson(s, code, { profile: 'confined' });
      expect(out).toEqual({ '/proc/self/mountinfo': 'EACCES', '/proc/self/status': 'ok' });
      const { out: plain } = await pyJson(s, code);
      expect(plain).toEqual({ '/proc/self/mountinfo': 'ok', '/proc/self/status': 'ok' });
    });

    it('GET /readyz reports the AppArmor profile loaded', async () => {
      const res = await fetch(`${s.url}/readyz`);
      const body = (await res.json()) as any;
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(body.checks.apparmor).toEqual({ ok: true, detail: 'loaded: zviz-function' });
    });
  },
  skip,
);

describeWhere(hasAppArmor() ? 'this host: AppArmor on: the refusal does not apply' : null, 'layer C: start-up refuses what this host cannot enforce', () => {
  it(`a profile naming an AppArmor profile on a host without AppArmor stops start-up with one line naming it [this host: AppArmor off]`, async () => {
    const profiles = makeProfilesDir({ confined: (p) => (p.apparmorProfile = 'zviz-function') });
    const stateDir = mkdtempSync(join(tmpdir(), 'zviz-layer-c-state-'));
    chmodSync(stateDir, 0o711); // as the harness does: sandboxes must reach their mount point
    try {
      const r = await startUp({ ZVIZ_STATE_DIR: stateDir, ZVIZ_PROFILES_DIR: profiles.dir });
      expect(r.listened, `the server started listening:\n${r.stderr}`).toBe(false);
      expect(r.code).not.toBe(0);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toContain("'confined'");
      expect(lines[0]).toContain("'zviz-function'");
      expect(lines[0]).toMatch(/AppArmor is not enabled/);
    } finally {
      profiles.remove();
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
}, skip);
