// Layer A, privileged: the promises of the namespaces, mounts, credentials and process
// set-up (native/src/sandbox.c, mnt.c, caps.c, net.c, userns.c, process.c), each checked
// from inside a real sandbox through POST /invoke, and from the host where the host can
// see more (host uids, leftover processes, a canary socket on the host's loopback).
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostLeftovers, settledLeftovers } from './support/leftovers.js';
import { hostProcessesMatching, zombiesUnder } from './support/procfs.js';
import { hostUidOf, PY_LIBC, run, runJson, runOk } from './support/sandboxes.js';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';
import { pollUntil, scaledMs, timeScale, token } from './support/wait.js';

const BASE_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' };

describe.skipIf(privilegedReason() !== null)('layer A, seen from inside a sandbox', () => {
  const canary = `zviz-canary-${token()}${token()}`;
  let s: RunningServer;
  let stopped = false;
  let ourZombiesBefore: number[] = [];
  let before: string[] = []; // what other servers left on a shared host

  beforeAll(async () => {
    before = hostLeftovers();
    ourZombiesBefore = zombiesUnder(process.pid).map((p) => p.pid);
    s = await startServer({ env: { ZVIZ_TEST_CANARY: canary } });
  });
  afterAll(async () => {
    if (s && !stopped) await s.stop();
  });

  it('the network namespace has only lo, and no routes but the loopback ones', async () => {
    const r = await runJson(s, `
import errno, json, socket
dev = [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]
try:
    links = [name for _, name in socket.if_nameindex()]  # rtnetlink: not a family the profile names
except OSError as e:
    links = errno.errorcode.get(e.errno, str(e.errno))
route = open('/proc/net/route').read().splitlines()
v6 = [l.split() for l in open('/proc/net/ipv6_route').read().splitlines()]
print(json.dumps({'dev': dev, 'links': links, 'route': route, 'v6': v6}))`);
    expect(r.dev).toEqual(['lo']);
    expect(r.links).toBe('EAFNOSUPPORT'); // the interfaces are listed through /proc/net/dev alone (layer B refuses AF_NETLINK)
    expect(r.route).toHaveLength(1); // the header only: no IPv4 route in the main table
    // With lo up the kernel lists ::1/128 (local) and its reject entries; nothing else.
    for (const [dest, plen, , , nexthop, , , , flags, dev] of r.v6 as string[][]) {
      expect(dev).toBe('lo');
      expect(nexthop).toMatch(/^0{32}$/);
      const reject = (parseInt(flags!, 16) & 0x200) !== 0;
      if (!reject) expect(`${dest}/${plen}`).toBe(`${'0'.repeat(31)}1/80`);
    }
  });

  it("a TCP connect to a port listening on the host's loopback fails: the sandbox's loopback is its own", async () => {
    let accepted = 0;
    const canaryServer = createServer((c) => {
      accepted++;
      c.destroy();
    });
    await new Promise<void>((res) => canaryServer.listen(0, '127.0.0.1', res));
    const port = (canaryServer.address() as AddressInfo).port;
    try {
      const r = await runJson(s, `
import json, socket
sock = socket.socket(); sock.settimeout(3)
try:
    sock.connect(('127.0.0.1', ${port})); result = 'connected'
except OSError as e:
    result = f'{type(e).__name__} errno={e.errno}'
ports = [int(l.split()[1].split(':')[1], 16) for f in ('/proc/net/tcp', '/proc/net/tcp6')
         for l in open(f).read().splitlines()[1:]]
print(json.dumps({'connect': result, 'ports': ports}))`);
      expect(r.connect).not.toBe('connected');
      expect(r.ports).not.toContain(port); // the host's listening socket is not in this namespace
      expect(accepted).toBe(0);
    } finally {
      await new Promise((res) => canaryServer.close(res));
    }
  });

  it('/proc shows only the sandbox: its init as pid 1 and the function, no host pid', async () => {
    const r = await runJson(s, `
import json, os
print(json.dumps({'pids': sorted(int(n) for n in os.listdir('/proc') if n.isdigit()), 'me': os.getpid(), 'parent': os.getppid()}))`);
    expect(r.parent).toBe(1);
    expect(r.pids).toEqual([1, r.me]);
    expect(r.me).toBeLessThan(20);
    expect(r.pids).not.toContain(s.pid);
    expect(r.pids).not.toContain(process.pid);
  });

  it("the hostname is 'zviz'", async () => {
    const out = await runOk(s, 'bash', 'hostname; uname -n; cat /proc/sys/kernel/hostname');
    expect(out).toBe('zviz\nzviz\nzviz\n');
  });

  it('the function runs as uid and gid 1000, mapped to unprivileged host ids', async () => {
    const r = await runJson(s, `
import json, os
print(json.dumps({'uid': os.getresuid(), 'gid': os.getresgid(), 'groups': os.getgroups(),
                  'uidMap': open('/proc/self/uid_map').read(), 'gidMap': open('/proc/self/gid_map').read()}))`);
    expect(r.uid).toEqual([1000, 1000, 1000]);
    expect(r.gid).toEqual([1000, 1000, 1000]);
    expect(r.groups).toEqual([]); // no supplementary groups
    for (const map of [r.uidMap, r.gidMap] as string[]) {
      expect(hostUidOf(map)).toBeGreaterThan(0);
      for (const line of map.trim().split('\n')) expect(Number(line.trim().split(/\s+/)[1])).not.toBe(0);
    }
  });

  it('two concurrent sandboxes run as different host uids', async () => {
    // Long enough for the second to start while the first runs: a sandbox's creation takes seconds under TCG.
    const code = `date +%s%N; cat /proc/self/uid_map; sleep ${timeScale()}; date +%s%N`;
    const outs = await Promise.all([runOk(s, 'bash', code), runOk(s, 'bash', code)]);
    const parsed = outs.map((o) => {
      const lines = o.trim().split('\n');
      return { start: BigInt(lines[0]!), end: BigInt(lines.at(-1)!), uid: hostUidOf(lines.slice(1, -1).join('\n')) };
    });
    const [a, b] = parsed as [(typeof parsed)[0], (typeof parsed)[0]];
    expect(a.start < b.end && b.start < a.end, 'the two functions ran at the same time').toBe(true);
    expect(a.uid).not.toBe(b.uid);
  });

  describe('capabilities', () => {
    let status: Promise<string>;
    beforeAll(() => {
      status = runOk(s, 'bash', 'cat /proc/self/status');
      status.catch(() => undefined); // each test awaits it and reports the failure itself
    });
    it.each(['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'])('%s is empty', async (field) => {
      expect(await status).toMatch(new RegExp(`^${field}:\\s+0{16}$`, 'm'));
    });
    it('no_new_privs is set', async () => {
      expect(await status).toMatch(/^NoNewPrivs:\s+1$/m);
    });
  });

  describe('filesystem writes', () => {
    const name = `zviz-probe-${token()}`;
    it.each(['/usr', '/etc', '', '/fn', '/dev'])('writing a new file in %s/ fails', async (dir) => {
      const path = `${dir}/${name}`;
      const r = await run(s, 'bash', `touch ${path}`);
      expect(r.status).toBe('error');
      expect(r.stderr).toMatch(/Read-only file system|Permission denied/);
      const after = await runOk(s, 'bash', `test -e ${path} && echo exists || echo absent`);
      expect(after).toBe('absent\n');
      if (dir === '/usr') expect(existsSync(path)).toBe(false); // /usr is the host's own, bound read-only
    });
    it('writing /tmp works', async () => {
      expect(await runOk(s, 'bash', `echo ${name} > /tmp/f && cat /tmp/f`)).toBe(`${name}\n`);
    });
  });

  it("/etc holds no shadow files and a synthesized passwd and group with none of the host's users", async () => {
    const r = await runJson(s, `
import json, os
print(json.dumps({'absent': [p for p in ('/etc/shadow', '/etc/gshadow', '/etc/sudoers', '/etc/ssh') if not os.path.lexists(p)],
                  'passwd': open('/etc/passwd').read(), 'group': open('/etc/group').read()}))`);
    expect(r.absent).toEqual(['/etc/shadow', '/etc/gshadow', '/etc/sudoers', '/etc/ssh']);
    const names = (text: string) => text.trim().split('\n').map((l) => l.split(':')[0]);
    expect(names(r.passwd)).toEqual(['root', 'sandbox', 'nobody']);
    expect(names(r.group)).toEqual(['root', 'sandbox', 'nogroup']);
    const hostOnly = names(readFileSync('/etc/passwd', 'utf8')).filter((n) => !['root', 'nobody'].includes(n!));
    for (const n of hostOnly) expect(r.passwd).not.toContain(`${n}:`);
  });

  describe('mount-changing calls fail', () => {
    it.each([
      ['mount tmpfs on /tmp/x', "call(libc.mount, b'none', b'/tmp/x', b'tmpfs', 0, None)"],
      ['umount /usr', "call(libc.umount2, b'/usr', 2)"],
      ['pivot_root into /tmp/x', "call(libc.syscall, 155, b'/tmp/x', b'/tmp/x/old')"],
      ['unshare a mount namespace', 'call(libc.unshare, 0x00020000)'],
      ['unshare a network namespace', 'call(libc.unshare, 0x40000000)'],
    ])('%s fails with EPERM', async (_what, expr) => {
      const out = await runOk(s, 'python', `${PY_LIBC}
os.makedirs('/tmp/x/old')
print(${expr})`);
      expect(out).toBe('EPERM\n');
    });
    it.each([
      ['mount', 'mount -t tmpfs none /tmp/x'],
      ['umount', 'umount -l /usr'],
      ['pivot_root', '/usr/sbin/pivot_root /tmp/x /tmp/x/old'],
    ])('the %s binary exits non-zero', async (_what, cmd) => {
      const r = await run(s, 'bash', `mkdir -p /tmp/x/old; ${cmd}`);
      expect(r.status).toBe('error');
    });
    // Layer A alone does not stop this (the sandbox's user namespace may nest another, with
    // a full capability set inside): seccomp's always-denied list does.
    it('creating a nested user namespace fails (syscall and `unshare -U`)', async () => {
      const out = await runOk(s, 'python', `${PY_LIBC}
import subprocess
print(call(libc.unshare, 0x10000000), subprocess.run(['/usr/bin/unshare', '-U', 'true']).returncode)`);
      expect(out).toMatch(/^EPERM [1-9]\d*\n$/);
    });
  });

  it('the function inherits only fds 0, 1 and 2', async () => {
    // The listing opens one fd of its own and closes it again: keep what is still open.
    const r = await runJson(s, `
import json, os
names = os.listdir('/proc/self/fd')
print(json.dumps({'open': sorted(int(n) for n in names if os.path.lexists('/proc/self/fd/' + n)),
                  'listed': len(names), 'targets': [os.readlink('/proc/self/fd/%d' % i) for i in (0, 1, 2)]}))`);
    expect(r.open).toEqual([0, 1, 2]);
    expect(r.listed).toBe(4);
    for (const t of r.targets as string[]) expect(t).toMatch(/^pipe:\[\d+\]$/);
  });

  it("the server's environment is invisible: the function sees exactly the request env over PATH, HOME and LANG", async () => {
    expect(readFileSync(`/proc/${s.pid}/environ`, 'utf8')).toContain(canary); // the probe can see a leak
    const env = { ZVIZ_PROBE: token(), HOME: '/tmp/home' };
    const r = await runJson(s, `
import glob, json, os
found, unreadable = [], []
for f in glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline'):
    try:
        if ${JSON.stringify(canary)}.encode() in open(f, 'rb').read(): found.append(f)
    except OSError:
        unreadable.append(f)
print(json.dumps({'env': dict(os.environ), 'found': found, 'unreadable': unreadable}))`, { env });
    expect(r.found).toEqual([]);
    expect(r.unreadable).toEqual(['/proc/1/environ']); // init, not dumpable; of another uid
    expect(r.env).toEqual({ ...BASE_ENV, ...env });
  });

  it('setuid binaries run with the caller’s ids and no capabilities', async () => {
    const r = await runJson(s, `
import json, os, subprocess
out = []
for argv in (['/usr/bin/su', '-c', 'id'], ['/usr/bin/passwd', '-S'], ['/usr/bin/newgrp', 'root'], ['/usr/bin/mount', '-a']):
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Popen returns once execve succeeded; until we wait, /proc keeps the status even of a zombie.
    st = dict(l.split(':', 1) for l in open('/proc/%d/status' % p.pid).read().splitlines())
    p.communicate()
    out.append({'argv': argv[0], 'setuid': bool(os.stat(argv[0]).st_mode & 0o4000),
                'uid': st['Uid'].split(), 'gid': st['Gid'].split(), 'capEff': st['CapEff'].strip(), 'rc': p.returncode})
print(json.dumps(out))`);
    for (const p of r as Array<Record<string, unknown>>) {
      expect(p, String(p.argv)).toMatchObject({ setuid: true, uid: ['1000', '1000', '1000', '1000'], gid: ['1000', '1000', '1000', '1000'], capEff: '0'.repeat(16) });
      if (p.argv === '/usr/bin/su' || p.argv === '/usr/bin/newgrp') expect(p.rc).not.toBe(0);
    }
  });

  it('the function has no controlling terminal and leads a session of its own', async () => {
    const r = await runJson(s, `
import json, os, subprocess
try:
    os.open('/dev/tty', os.O_RDWR); tty = 'opened'
except OSError as e:
    tty = e.errno
stat = open('/proc/self/stat').read().rsplit(')', 1)[1].split()
print(json.dumps({'devTty': tty, 'ttyCmd': subprocess.run(['tty'], capture_output=True, text=True).stdout,
                  'pid': os.getpid(), 'sid': int(stat[3]), 'ttyNr': int(stat[4]), 'isatty': [os.isatty(i) for i in range(3)]}))`);
    expect(r.devTty).not.toBe('opened');
    expect(r.ttyCmd).toBe('not a tty\n');
    expect(r.sid).toBe(r.pid);
    expect(r.ttyNr).toBe(0);
    expect(r.isatty).toEqual([false, false, false]);
  });

  it('/dev holds only null, zero, full, random, urandom, shm and the fd links; /sys, /home, /root and /run do not exist', async () => {
    const absent = ['/sys', '/home', '/root', '/run', '/var', '/boot', '/mnt', '/opt', '/srv', '/work', s.stateDir];
    const r = await runJson(s, `
import json, os
print(json.dumps({'dev': sorted(os.listdir('/dev')), 'present': [p for p in ${JSON.stringify(absent)} if os.path.lexists(p)]}))`);
    expect(r.dev).toEqual(['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'urandom', 'zero']);
    expect(r.present).toEqual([]);
  });

  it('a timeout kills the whole tree, setsid and double-forked daemons included', async () => {
    const marker = `1000.${Date.now() % 100000}${Math.floor(Math.random() * 1000)}`;
    expect(hostProcessesMatching(`sleep ${marker}`)).toEqual([]);
    const pending = run(s, 'bash', `
setsid sleep ${marker} &
( ( setsid sleep ${marker} & ) & )
sleep 0.2
ps -eo pid,ppid,sid,args
sleep 30`, { limits: { timeoutMs: scaledMs(500) } });
    let done = false;
    void pending.finally(() => (done = true));
    // Only the sleeps themselves: `setsid` before its exec, or a runtime holding the code
    // in its argv, show the same words.
    const sleeps = () => hostProcessesMatching(`sleep ${marker}`).filter((p) => p.cmdline === `sleep ${marker}`);
    const seen = await pollUntil(sleeps, (p) => p.length >= 2 || done, scaledMs(5000), 10);
    const r = await pending;
    expect(seen.length, 'both daemons were running on the host').toBe(2);
    expect(r.status).toBe('timeout');
    expect(r.reason).toBe('timeout');
    // ps columns: pid ppid sid args; both sleeps ran in sessions of their own.
    const psSleeps = r.stdout.split('\n').filter((l) => l.trim().split(/\s+/).slice(3).join(' ') === `sleep ${marker}`);
    expect(psSleeps).toHaveLength(2);
    for (const l of psSleeps) {
      const [pid, , sid] = l.trim().split(/\s+/);
      expect(sid).toBe(pid);
    }
    expect(hostProcessesMatching(`sleep ${marker}`)).toEqual([]); // nor anything else of that tree
  });

  it.each([
    ['stdout', 'yes'],
    ['stderr', 'yes >&2'],
  ] as const)('an output flood on %s is cut at outputBytes and killed while /healthz keeps answering', async (stream, code) => {
    const flood = run(s, 'bash', code, { limits: { outputBytes: 1000 } });
    const health = fetch(`${s.url}/healthz`, { signal: AbortSignal.timeout(scaledMs(10_000)) });
    const [r, h] = await Promise.all([flood, health]);
    expect(h.status).toBe(200);
    expect(r).toMatchObject({ status: 'killed', reason: 'output-limit', truncated: true });
    expect(Buffer.byteLength(r[stream])).toBeLessThanOrEqual(1000);
    expect(r[stream]).toMatch(/^(y\n)+y?$/);
  });

  it('20 concurrent invocations each keep their own /tmp and their own host uid', async () => {
    const tokens = Array.from({ length: 20 }, () => token());
    // All settled before any verdict: none is left running into the next test.
    const settled = await Promise.allSettled(
      tokens.map((t) => runOk(s, 'bash', 'echo "$TOKEN" > /tmp/t; sleep 0.3; cat /tmp/t; cat /proc/self/uid_map', { env: { TOKEN: t } })),
    );
    const outs = settled.map((r) => {
      if (r.status === 'rejected') throw r.reason;
      return r.value;
    });
    const uids = outs.map((o, i) => {
      const [first, ...map] = o.trim().split('\n');
      expect(first).toBe(tokens[i]);
      return hostUidOf(map.join('\n'));
    });
    expect(new Set(uids).size).toBe(20);
  });

  it('stopping the server leaves no cgroup, supervisor, mount or zombie behind', async () => {
    const zombies = await pollUntil(() => zombiesUnder(s.pid), (z) => z.length === 0, scaledMs(3000));
    expect(zombies).toEqual([]);
    stopped = true;
    expect(await s.stop(), `the server's exit code on SIGTERM; its log:\n${s.logs().split('\n').slice(-20).join('\n')}`).toBe(0);
    expect(await settledLeftovers([s.pid], before)).toEqual([]); // hostLeftovers() when no other ZViz server runs
    const ours = zombiesUnder(process.pid).filter((z) => !ourZombiesBefore.includes(z.pid));
    expect(ours).toEqual([]);
  });
});
