// Layer B, privileged: the seccomp filter and the ZViz broker (native/src/seccomp.c,
// broker.c, audit.c), checked from inside real sandboxes through POST /invoke and, where
// the host sees more (the broker process, leftovers), from outside.
//
// The invalid-argument technique (bubblewrap try-syscall.c): every dangerous call gets a
// bad fd (-1) or a bad pointer (1), so that were it let through, the kernel would answer
// EBADF, EFAULT or EINVAL. The policy answers EPERM (EAFNOSUPPORT for a socket family the
// profile does not name). The function runs unprivileged, so
// for a call the kernel would refuse with EPERM anyway (mount, reboot, …) the proof is the
// audit record the broker wrote for it.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_BROKERED_FILE_BYTES } from '../worker-pool/spec.js';
import { SOCKET_FAMILIES } from '../profiles/index.js';
import { brokerStormPython, trustedBudgetMs } from './support/broker-storm.js';
import { serverLeftovers } from './support/leftovers.js';
import { hostProcess } from './support/procfs.js';
import { makeProfilesDir, type ProfilesDir } from './support/profiles.js';
import { brokerEvents, type Invocation, processMarker, PY_SYSCALL, pyJson, pyNameSelf, run, sandboxByMarker, seccompEvents } from './support/sandboxes.js';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';
import { ALL_FAMILIES, EXPECTED_REAL, EXPECTED_REFUSALS, expectedSweep, FAMILY_NAME, pySocketFamilies, type SocketFamiliesOut } from './support/socket-families.js';
import { ADDR_NO_RANDOMIZE, ALWAYS_DENIED, CLONE_NEWUSER, FIONREAD, READ_IMPLIES_EXEC, syscallTableUnavailable, TCGETS, TIOCLINUX, TIOCSTI, X32_SYSCALL_BIT, x86_64Syscalls } from './support/syscall-table.js';
import { hasIa32 } from './support/machine.js';
import { pollFor, scaledMs, sleep, timeScale, token } from './support/wait.js';

const skip = privilegedReason() ?? syscallTableUnavailable();

const BAD_FD = -1;
const BAD_PTR = 1;
const CLONE_FS = 0x200;

/**
 * [label, syscall, args]: arguments that make the unfiltered call fail (the unfiltered
 * answer to an unprivileged caller is noted per line and checked by a control run on the
 * host), so only the filter can produce EPERM. Labels differ from the syscall name where
 * one syscall is tried with several arguments.
 */
const DENIED_CALLS: Array<[string, string, number[]]> = [
  ['ptrace', 'ptrace', [0x4206 /* PTRACE_SEIZE */, 999_999, 0, 0]], // ESRCH
  ['process_vm_readv', 'process_vm_readv', [0, BAD_PTR, 1, BAD_PTR, 1, 0]], // EFAULT
  ['process_vm_writev', 'process_vm_writev', [0, BAD_PTR, 1, BAD_PTR, 1, 0]], // EFAULT
  ['kexec_load', 'kexec_load', [0, 1, BAD_PTR, 0]], // ENOSYS (or EPERM)
  ['kexec_file_load', 'kexec_file_load', [BAD_FD, BAD_FD, 0, BAD_PTR, 0]], // ENOSYS (or EPERM)
  ['init_module', 'init_module', [BAD_PTR, 1, BAD_PTR]], // ENOSYS (or EPERM)
  ['finit_module', 'finit_module', [BAD_FD, BAD_PTR, 0]], // ENOSYS (or EPERM)
  ['delete_module', 'delete_module', [BAD_PTR, 0]], // ENOSYS (or EPERM)
  ['bpf', 'bpf', [0 /* BPF_MAP_CREATE */, BAD_PTR, 72]], // EFAULT (EPERM on kernels that check privilege first)
  ['perf_event_open', 'perf_event_open', [BAD_PTR, 0, -1, BAD_FD, 0]], // EFAULT
  ['userfaultfd', 'userfaultfd', [-1]], // EINVAL (unknown flags)
  ['keyctl', 'keyctl', [11 /* KEYCTL_READ */, -1, BAD_PTR, 1]], // ENOKEY
  ['add_key', 'add_key', [BAD_PTR, BAD_PTR, BAD_PTR, 1, 0]], // EFAULT
  ['request_key', 'request_key', [BAD_PTR, BAD_PTR, BAD_PTR, 0]], // EFAULT
  ['io_uring_setup', 'io_uring_setup', [1, BAD_PTR]], // EFAULT
  ['io_uring_enter', 'io_uring_enter', [BAD_FD, 0, 0, 0, 0, 0]], // EBADF
  ['io_uring_register', 'io_uring_register', [BAD_FD, 0, 0, 0]], // EINVAL
  ['mount', 'mount', [BAD_PTR, BAD_PTR, BAD_PTR, 0, 0]], // EFAULT
  ['umount2', 'umount2', [BAD_PTR, 0]], // EFAULT
  ['pivot_root', 'pivot_root', [BAD_PTR, BAD_PTR]], // EPERM: the kernel checks privilege first
  ['chroot', 'chroot', [BAD_PTR]], // EFAULT
  ['fsopen', 'fsopen', [BAD_PTR, 0]], // EPERM: the kernel checks privilege first
  ['fsconfig', 'fsconfig', [BAD_FD, 0, 0, 0, 0]], // EINVAL
  ['fsmount', 'fsmount', [BAD_FD, 0, 0]], // EPERM: the kernel checks privilege first
  ['fspick', 'fspick', [BAD_FD, BAD_PTR, 0]], // EPERM: the kernel checks privilege first
  ['open_tree', 'open_tree', [BAD_FD, BAD_PTR, 0]], // EFAULT
  ['move_mount', 'move_mount', [BAD_FD, BAD_PTR, BAD_FD, BAD_PTR, 0]], // EPERM: the kernel checks privilege first
  ['mount_setattr', 'mount_setattr', [BAD_FD, BAD_PTR, 0x80000000, BAD_PTR, 32]], // EINVAL (unknown flag)
  ['unshare', 'unshare', [CLONE_NEWUSER | 1]], // EINVAL (bit 0 is not an unshare flag)
  ['setns', 'setns', [BAD_FD, 0]], // EBADF
  ['acct', 'acct', [BAD_PTR]], // EPERM: the kernel checks privilege first
  ['swapon', 'swapon', [BAD_PTR, -1]], // EINVAL (unknown flags)
  ['swapoff', 'swapoff', [BAD_PTR]], // EPERM: the kernel checks privilege first
  ['reboot', 'reboot', [0, 0, 0, 0]], // EPERM: the kernel checks privilege first
  ['syslog', 'syslog', [3 /* SYSLOG_ACTION_READ_ALL */, BAD_PTR, 1]], // EPERM with dmesg_restrict, else EFAULT
  ['quotactl', 'quotactl', [0, BAD_PTR, 0, BAD_PTR]], // EFAULT
  ['quotactl_fd', 'quotactl_fd', [BAD_FD, 0, 0, BAD_PTR]], // EBADF
  ['name_to_handle_at', 'name_to_handle_at', [BAD_FD, BAD_PTR, BAD_PTR, BAD_PTR, 0]], // EFAULT
  ['open_by_handle_at', 'open_by_handle_at', [BAD_FD, BAD_PTR, 0]], // EFAULT (EPERM on kernels that check privilege first)
  ['lookup_dcookie', 'lookup_dcookie', [0, BAD_PTR, 1]], // ENOSYS (gone in 6.x)
  ['uselib', 'uselib', [BAD_PTR]], // ENOSYS (or EFAULT)
  ['vhangup', 'vhangup', []], // EPERM: the kernel checks privilege first
  ['iopl', 'iopl', [3]], // ENOSYS (or EPERM)
  ['ioperm', 'ioperm', [0, 1, 1]], // ENOSYS (or EPERM)
  ['settimeofday', 'settimeofday', [BAD_PTR, BAD_PTR]], // EFAULT
  ['clock_settime', 'clock_settime', [0, BAD_PTR]], // EFAULT
  ['clock_adjtime', 'clock_adjtime', [0, BAD_PTR]], // EFAULT
  ['adjtimex', 'adjtimex', [BAD_PTR]], // EFAULT
  ['pidfd_getfd', 'pidfd_getfd', [BAD_FD, 0, 0]], // EBADF
  // Changes of the personality (querying it is allowed): unfiltered, these would succeed.
  ['personality(ADDR_NO_RANDOMIZE)', 'personality', [ADDR_NO_RANDOMIZE]],
  ['personality(READ_IMPLIES_EXEC)', 'personality', [READ_IMPLIES_EXEC]],
  // A new user namespace by clone: CLONE_FS makes the unfiltered call EINVAL.
  ['clone(CLONE_NEWUSER)', 'clone', [CLONE_NEWUSER | CLONE_FS | 17 /* SIGCHLD */, 0, 0, 0, 0]],
];

/**
 * Labels the kernel itself may refuse with EPERM to an unprivileged caller (it checks
 * privilege before the arguments, or, for the module and kexec calls, where they are built
 * in): for these the audit record is the proof that the filter answered.
 */
const KERNEL_MAY_SAY_EPERM = new Set([
  ...['pivot_root', 'fsopen', 'fsmount', 'fspick', 'move_mount', 'acct', 'swapoff', 'reboot', 'syslog', 'vhangup'],
  ...['kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module', 'iopl', 'ioperm'],
  ...kernelConditionalEperm().map(([label]) => label),
]);

/**
 * Labels this kernel refuses with EPERM before it looks at the arguments, and why: bpf where
 * kernel.unprivileged_bpf_disabled is set (Debian's default), open_by_handle_at before 6.10
 * (it checked CAP_DAC_READ_SEARCH first until "fhandle: relax open_by_handle_at() permission
 * checks"). Named in the control's title.
 */
function kernelConditionalEperm(): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let bpfDisabled = '0';
  try {
    bpfDisabled = readFileSync('/proc/sys/kernel/unprivileged_bpf_disabled', 'utf8').trim();
  } catch {
    bpfDisabled = '0'; // no such sysctl: unprivileged bpf is not restricted by it
  }
  if (bpfDisabled !== '0') out.push(['bpf', `kernel.unprivileged_bpf_disabled=${bpfDisabled}`]);
  const [major = 0, minor = 0] = release().split(/[.-]/).map(Number);
  if (major < 6 || (major === 6 && minor < 10)) out.push(['open_by_handle_at', `kernel ${release()} < 6.10`]);
  return out;
}

describe.skipIf(skip !== null)('layer B: seccomp allowlists and the broker, in real sandboxes', () => {
  const NR = skip === null ? x86_64Syscalls() : new Map<string, number>();
  const nr = (n: string): number => NR.get(n) ?? (() => { throw new Error(`no x86_64 syscall named ${n}`); })();
  const secret = `zviz-secret-${randomBytes(12).toString('hex')}`;
  let hostDir: string;
  let secretFile: string;
  let profiles: ProfilesDir;
  let s: RunningServer;

  beforeAll(async () => {
    // The broker runs as root on the host: the secret may be private to root.
    hostDir = mkdtempSync(join(tmpdir(), 'zviz-layer-b-'));
    secretFile = join(hostDir, 'db');
    writeFileSync(secretFile, secret, { mode: 0o600 });
    symlinkSync('/etc/hostname', join(hostDir, 'link-to-hostname'));
    symlinkSync('/etc', join(hostDir, 'link-to-etc'));
    chmodSync(hostDir, 0o700);
    // Around the size the broker copies (MAX_BROKERED_FILE_BYTES): one byte over, exactly.
    writeFileSync(join(hostDir, 'big'), 'b'.repeat(MAX_BROKERED_FILE_BYTES + 1), { mode: 0o600 });
    writeFileSync(join(hostDir, 'edge'), 'e'.repeat(MAX_BROKERED_FILE_BYTES), { mode: 0o600 });
    const brokered = [
      { path: '/run/secrets/db', source: secretFile },
      { path: '/run/secrets/big', source: join(hostDir, 'big') },
      { path: '/run/secrets/edge', source: join(hostDir, 'edge') },
      { path: '/run/secrets/link', source: join(hostDir, 'link-to-hostname') },
      { path: '/run/secrets/parent-link', source: join(hostDir, 'link-to-etc', 'hostname') },
    ];
    profiles = makeProfilesDir({
      broker: (p) => {
        p.seccomp.brokeredFiles = brokered;
      },
      // The host's /etc bound read-only over the synthesized one: /etc/shadow exists in the
      // view, and only Landlock and DAC stand between the function and it.
      // The default profile with room for the flood's limit on a slow machine.
      flood: (p) => {
        p.limits.max.timeoutMs = scaledMs(60_000);
      },
      'broker-etc': (p) => {
        p.seccomp.brokeredFiles = brokered;
        p.filesystem.readOnlyBinds = [{ source: '/etc', target: '/etc' }];
        p.limits.max.timeoutMs = scaledMs(60_000);
      },
    });
    s = await startServer({ env: { ZVIZ_PROFILES_DIR: profiles.dir } });
  });

  let stopped = false;
  afterAll(async () => {
    if (s && !stopped) await s.stop();
    profiles?.remove();
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
  });

  describe('always-denied syscalls', () => {
    let r: Invocation;
    let got: Record<string, string>;
    const program = (): string => {
      const cases = Object.fromEntries(DENIED_CALLS.map(([label, name, args]) => [label, [nr(name), args]]));
      return `${PY_SYSCALL}
cases = json.loads(${JSON.stringify(JSON.stringify(cases))})
print(json.dumps({label: sc(n, *args) for label, (n, args) in cases.items()}))`;
    };

    beforeAll(async () => {
      ({ out: got, r } = await pyJson(s, program()));
    });

    const conditional = kernelConditionalEperm();
    const because = conditional.length > 0 ? ` (EPERM from the kernel itself allowed for ${conditional.map(([l, why]) => `${l}: ${why}`).join('; ')})` : '';
    it(`control: unfiltered, as an unprivileged host user, the same calls fail otherwise (or succeed)${because}`, () => {
      const host = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', '-c', program()], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      expect(host.stderr).toBe('');
      const unfiltered = JSON.parse(host.stdout) as Record<string, string>;
      const eperm = Object.keys(unfiltered).filter((l) => unfiltered[l] === 'EPERM' && !KERNEL_MAY_SAY_EPERM.has(l));
      expect(eperm).toEqual([]);
      expect(unfiltered['personality(READ_IMPLIES_EXEC)']).toBe('ok');
    });

    it('covers every always-denied syscall', () => {
      expect(new Set(DENIED_CALLS.map(([, n]) => n))).toEqual(new Set([...ALWAYS_DENIED, 'personality', 'clone']));
    });

    it.each(DENIED_CALLS)('%s answers EPERM, the policy errno', (label) => {
      expect(got[label]).toBe('EPERM');
    });

    it.each(DENIED_CALLS)('%s is in the audit, by name and number, as errno', (_label, name) => {
      const ev = seccompEvents(r).filter((a) => a.syscall === name);
      expect(ev).toHaveLength(1);
      expect(ev[0]).toMatchObject({ nr: nr(name), action: 'errno' });
      expect(ev[0]!.count).toBeGreaterThanOrEqual(1);
    });

    it('the invocation itself is unharmed: status ok, nothing killed', () => {
      expect(r).toMatchObject({ status: 'ok', exitCode: 0, signal: null, reason: null });
      expect(seccompEvents(r).filter((a) => a.action === 'kill')).toEqual([]);
    });
  });

  it('ioctl TIOCSTI and TIOCLINUX answer EPERM, also with high bits set in the command word; ordinary ioctls pass', async () => {
    // fd 0 is a pipe: unfiltered, TIOCSTI and TIOCLINUX would be ENOTTY.
    const { out, r } = await pyJson(s, `${PY_SYSCALL}
import fcntl, termios
buf = ctypes.create_string_buffer(b'x', 8)
p = ctypes.addressof(buf)
rd, wr = os.pipe()
os.write(wr, b'abc')
n = ctypes.c_int(-1)
out = {
  'TIOCSTI': sc(${nr('ioctl')}, 0, ${TIOCSTI}, p),
  'TIOCSTI|1<<32': sc(${nr('ioctl')}, 0, ${0x1_0000_0000 + TIOCSTI}, p),
  'TIOCSTI|0x7fffffff<<32': sc(${nr('ioctl')}, 0, ${((0x7fff_ffffn << 32n) | BigInt(TIOCSTI)).toString()}, p),
  'TIOCLINUX': sc(${nr('ioctl')}, 0, ${TIOCLINUX}, p),
  'TIOCLINUX|1<<32': sc(${nr('ioctl')}, 0, ${0x1_0000_0000 + TIOCLINUX}, p),
  'TCGETS(stdin)': sc(${nr('ioctl')}, 0, ${TCGETS}, p),
  'FIONREAD(pipe)': sc(${nr('ioctl')}, rd, ${FIONREAD}, ctypes.addressof(n)),
}
out['FIONREAD value'] = n.value
print(json.dumps(out))`);
    expect(out).toEqual({
      TIOCSTI: 'EPERM',
      'TIOCSTI|1<<32': 'EPERM',
      'TIOCSTI|0x7fffffff<<32': 'EPERM',
      TIOCLINUX: 'EPERM',
      'TIOCLINUX|1<<32': 'EPERM',
      'TCGETS(stdin)': 'ENOTTY',
      'FIONREAD(pipe)': 'ok',
      'FIONREAD value': 3,
    });
    expect(seccompEvents(r).filter((a) => a.syscall === 'ioctl')).toEqual([
      { kind: 'seccomp', syscall: 'ioctl', nr: nr('ioctl'), action: 'errno', count: 5 },
    ]);
  });

  describe('socket address families (default profile: AF_UNIX, AF_INET, AF_INET6)', () => {
    const ALLOWED: number[] = [SOCKET_FAMILIES.AF_UNIX, SOCKET_FAMILIES.AF_INET, SOCKET_FAMILIES.AF_INET6];
    const REFUSED = ALL_FAMILIES.filter((f) => !ALLOWED.includes(f)).map((f) => [f, FAMILY_NAME.get(f)!] as const);
    let got: SocketFamiliesOut;
    let r: Invocation;

    beforeAll(async () => {
      ({ out: got, r } = await pyJson<SocketFamiliesOut>(s, pySocketFamilies(nr('socket'), nr('socketpair'))));
    });

    it('control: unfiltered, as an unprivileged host user, every family 0-45 answers EINVAL to the bad type', () => {
      const host = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', '-c', pySocketFamilies(nr('socket'), nr('socketpair'), { real: false })], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      expect(host.stderr).toBe('');
      expect((JSON.parse(host.stdout) as SocketFamiliesOut).sweep).toEqual(expectedSweep(ALL_FAMILIES));
    });

    it.each(REFUSED)('family %i (%s): socket and socketpair answer EAFNOSUPPORT, the policy errno', (f) => {
      expect(got.sweep[String(f)]).toEqual({ socket: 'EAFNOSUPPORT', socketpair: 'EAFNOSUPPORT' });
    });

    it('AF_UNIX, AF_INET and AF_INET6 reach the kernel (EINVAL for the bad type), and real sockets of them work', () => {
      for (const f of ALLOWED) expect(got.sweep[String(f)], FAMILY_NAME.get(f)).toEqual({ socket: 'EINVAL', socketpair: 'EINVAL' });
      expect(got.real).toEqual(EXPECTED_REAL);
    });

    it('the audit counts every refusal, as errno on socket and socketpair', () => {
      expect(seccompEvents(r).filter((a) => a.syscall === 'socket' || a.syscall === 'socketpair')).toEqual([
        { kind: 'seccomp', syscall: 'socket', nr: nr('socket'), action: 'errno', count: EXPECTED_REFUSALS.socket },
        { kind: 'seccomp', syscall: 'socketpair', nr: nr('socketpair'), action: 'errno', count: EXPECTED_REFUSALS.socketpair },
      ]);
    });
  });

  describe('clone3', () => {
    it('answers ENOSYS (not EFAULT) while Python threads still start, by clone', async () => {
      const { out, r } = await pyJson(s, `${PY_SYSCALL}
import threading
res = {'clone3': sc(${nr('clone3')}, 1, 88)}
got = []
ts = [threading.Thread(target=lambda i=i: got.append(i * i)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
res['threads'] = sorted(got)
print(json.dumps(res))`);
      expect(out).toEqual({ clone3: 'ENOSYS', threads: [0, 1, 4, 9] });
      const ev = seccompEvents(r).filter((a) => a.syscall === 'clone3');
      expect(ev).toEqual([{ kind: 'seccomp', syscall: 'clone3', nr: nr('clone3'), action: 'errno', count: expect.any(Number) }]);
      expect(ev[0]!.count).toBeGreaterThanOrEqual(5); // ours, and one per thread glibc started
    });

    it('Node worker_threads still start (glibc falls back to clone), and the audit lists clone3 as errno', async () => {
      const r = await run(s, 'node', `
const { Worker } = require('node:worker_threads');
const ws = [1, 2, 3].map((n) => new Promise((res, rej) => {
  const w = new Worker('require("node:worker_threads").parentPort.postMessage(require("node:worker_threads").workerData * 7)', { eval: true, workerData: n });
  w.once('message', res); w.once('error', rej);
}));
Promise.all(ws).then((v) => console.log(JSON.stringify(v)));`);
      expect(r.status, r.stderr).toBe('ok');
      expect(JSON.parse(r.stdout)).toEqual([7, 14, 21]);
      expect(seccompEvents(r).filter((a) => a.syscall === 'clone3')).toEqual([
        { kind: 'seccomp', syscall: 'clone3', nr: nr('clone3'), action: 'errno', count: expect.any(Number) },
      ]);
    });
  });

  describe('foreign ABIs die (SIGSYS from seccomp, or SIGSEGV where the kernel lacks the ABI)', () => {
    it('an x32 syscall (getpid | 0x40000000) kills the process: killed/seccomp, audited as x32:getpid', async () => {
      const r = await run(s, 'python', `
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print('before', flush=True)
libc.syscall(ctypes.c_long(${nr('getpid') | X32_SYSCALL_BIT}))
print('survived', flush=True)`);
      expect(r).toMatchObject({ status: 'killed', reason: 'seccomp', signal: 'SIGSYS', exitCode: null, stdout: 'before\n' });
      const kills = seccompEvents(r).filter((a) => a.action === 'kill');
      expect(kills).toHaveLength(1);
      expect(kills[0]!.syscall).toBe('x32:getpid');
      expect(kills[0]!.nr).toBe(nr('getpid') | X32_SYSCALL_BIT);
    });

    // Where the kernel has IA32 emulation, seccomp sees the i386 call and kills. Where it has
    // none (CONFIG_IA32_EMULATION off, or ia32_emulation=0), `int 0x80` is a general
    // protection fault: SIGSEGV before seccomp sees anything, just as safe. The host probe
    // asks the kernel which one this is.
    const ia32 = hasIa32();
    const i386Title =
      ia32 === false
        ? 'an i386 getpid by int 0x80 dies of SIGSEGV before seccomp sees it [this kernel has no IA32 syscalls]'
        : 'an i386 getpid by int 0x80 kills the process: killed/seccomp, audited as a kill (i386: name unless rate-limited) [this kernel has IA32 syscalls]';
    it.skipIf(ia32 === null)(i386Title, async () => {
      // mov eax, 20 (i386 getpid); int 0x80; ret — on an anonymous RWX page, called through ctypes.
      const r = await run(s, 'python', `
import ctypes, mmap
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex('b814000000cd80c3'))
fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print('before', flush=True)
print('survived', fn(), flush=True)`);
      if (ia32 === false) {
        expect(r).toMatchObject({ status: 'killed', reason: 'signal', signal: 'SIGSEGV', stdout: 'before\n' });
        expect(seccompEvents(r).filter((a) => a.action === 'kill')).toEqual([]);
        return;
      }
      expect(r).toMatchObject({ status: 'killed', reason: 'seccomp', signal: 'SIGSYS', stdout: 'before\n' });
      const kills = seccompEvents(r).filter((a) => a.action === 'kill');
      expect(kills).toHaveLength(1);
      // The kernel's audit record may be rate-limited away; the SIGSYS is proof enough then.
      expect(kills[0]!.syscall).toMatch(/^(i386:getpid|unknown)$/);
    });
  });

  describe('the runtimes run real programs under their allowlists', () => {
    const CASES: Array<[string, 'node' | 'python' | 'bash', string, string | undefined, unknown]> = [
      [
        'node: fs in /tmp, crypto, worker_threads, child_process',
        'node',
        `
const fs = require('node:fs');
const crypto = require('node:crypto');
const { Worker } = require('node:worker_threads');
const { execSync } = require('node:child_process');
fs.mkdirSync('/tmp/d');
fs.writeFileSync('/tmp/d/a.txt', 'hello');
const back = fs.readFileSync('/tmp/d/a.txt', 'utf8');
fs.renameSync('/tmp/d/a.txt', '/tmp/d/b.txt');
const listed = fs.readdirSync('/tmp/d');
const hash = crypto.createHash('sha256').update(back).digest('hex').slice(0, 16);
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(crypto.randomUUID());
const w = new Worker('require("node:worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
w.once('message', (m) => {
  const hi = execSync('echo hi').toString().trim();
  console.log(JSON.stringify({ back, listed, hash, uuid, worker: m, hi }));
});`,
        undefined,
        { back: 'hello', listed: ['b.txt'], hash: '2cf24dba5fb0a30e', uuid: true, worker: 42, hi: 'hi' },
      ],
      [
        'python: a wide set of the standard library, subprocess, multiprocessing',
        'python',
        `
import json, hashlib, sqlite3, subprocess, threading, multiprocessing, asyncio, socket, tempfile, zlib, decimal, datetime
def square(x):
    return x * x
async def later():
    await asyncio.sleep(0.01)
    return 'async'
if __name__ == '__main__':
    out = {}
    db = sqlite3.connect('/tmp/t.db')
    db.execute('create table t(x)'); db.execute('insert into t values (41)'); db.commit()
    out['sqlite'] = db.execute('select x + 1 from t').fetchone()[0]
    out['sha'] = hashlib.sha256(b'zviz').hexdigest()[:8]
    out['sub'] = subprocess.run(['echo', 'sub'], capture_output=True, text=True, check=True).stdout.strip()
    got = []
    t = threading.Thread(target=lambda: got.append('thread')); t.start(); t.join()
    out['thread'] = got[0]
    with multiprocessing.Pool(2) as pool:
        out['pool'] = pool.map(square, [1, 2, 3])
    out['async'] = asyncio.run(later())
    a, b = socket.socketpair(); a.sendall(b'pair'); out['pair'] = b.recv(4).decode()
    with tempfile.NamedTemporaryFile('w+') as f:
        f.write('tmp'); f.seek(0); out['tmp'] = f.read()
    out['zlib'] = zlib.decompress(zlib.compress(b'z' * 100)) == b'z' * 100
    out['decimal'] = str(decimal.Decimal('0.1') + decimal.Decimal('0.2'))
    out['date'] = (datetime.date(2024, 2, 28) + datetime.timedelta(days=1)).isoformat()
    print(json.dumps(out))`,
        undefined,
        {
          sqlite: 42,
          sha: '2d82f8fd',
          sub: 'sub',
          thread: 'thread',
          pool: [1, 4, 9],
          async: 'async',
          pair: 'pair',
          tmp: 'tmp',
          zlib: true,
          decimal: '0.3',
          date: '2024-02-29',
        },
      ],
      [
        'bash: pipelines, subshells, command substitution, background jobs, read, redirects',
        'bash',
        `
set -euo pipefail
top=$(echo "a b c" | tr ' ' '\\n' | sort -r | head -2 | paste -sd, -)
lines=$(echo one | (cat; echo two) | wc -l)
sub=$( (cd /tmp && echo inside > f && cat f) )
sleep 0.1 & sleep 0.1 & wait
read -r line
echo noise > /dev/null 2>&1
echo quiet 2>/dev/null >&2
printf '{"top":"%s","lines":%d,"sub":"%s","waited":true,"stdin":"%s","host":"%s"}\\n' "$top" "$lines" "$sub" "$line" "$(uname -n)"`,
        'from-stdin\n',
        { top: 'c,b', lines: 2, sub: 'inside', waited: true, stdin: 'from-stdin', host: 'zviz' },
      ],
    ];

    // Each case in a pre-warmed sandbox (the default: the runtime was started before the
    // request and runs the code it is handed) and in a cold one (a server without warm
    // pools: the runtime runs /fn/<file> directly).
    describe.each([
      ['warm sandbox', true],
      ['cold sandbox (ZVIZ_WARM_MAX=0)', false],
    ] as const)('%s', (_mode, warm) => {
      let server: RunningServer;
      beforeAll(async () => {
        server = warm ? s : await startServer({ env: { ZVIZ_PROFILES_DIR: profiles.dir, ZVIZ_WARM_MAX: '0' } });
      });
      afterAll(async () => {
        if (!warm && server) await server.stop();
      });

      it.each(CASES)('%s', async (_what, runtime, code, stdin, expected) => {
        const opts = stdin === undefined ? {} : { stdin };
        let r = await run(server, runtime, code, opts);
        // A warm pool fills after its first claims: retry until a warm sandbox served it.
        for (let i = 0; warm && r.warm === false && i < 10 * timeScale(); i++) {
          await new Promise((res) => setTimeout(res, 300));
          r = await run(server, runtime, code, opts);
        }
        if (r.warm !== undefined) expect(r.warm, 'served by the wrong kind of sandbox').toBe(warm);
        expect(r.status, `${r.stdout}\n--- stderr\n${r.stderr}`).toBe('ok');
        expect(JSON.parse(r.stdout)).toEqual(expected);
        // Nothing of a real program is denied but clone3 (glibc's first try, then clone).
        expect(seccompEvents(r).filter((a) => a.syscall !== 'clone3')).toEqual([]);
      });
    });
  });

  describe('brokered files', () => {
    const PY_OPEN = `${PY_SYSCALL}
def fds():
    return sorted(os.listdir('/proc/self/fd'))
def read_via(open_fn):
    before = fds()
    try:
        fd = open_fn()
    except OSError as e:
        return {'result': errno.errorcode.get(e.errno, str(e.errno)), 'leaked': fds() != before}
    if fd < 0:
        return {'result': errno.errorcode.get(ctypes.get_errno(), '?'), 'leaked': fds() != before}
    try:
        data = os.read(fd, 4096).decode(errors='replace')
    except OSError as e:
        data = 'read failed: ' + errno.errorcode.get(e.errno, '?')
    os.close(fd)
    return {'result': 'opened', 'data': data}
`;

    it('reading the brokered path gives the host file, and the audit records the decision', async () => {
      const { out, r } = await pyJson(s, `${PY_OPEN}
open('/tmp/other', 'w').write('mine')
print(json.dumps({'os.open': read_via(lambda: os.open('/run/secrets/db', os.O_RDONLY)),
                  'open()': open('/run/secrets/db').read(),
                  'exists in the view': os.path.exists('/run/secrets'),
                  # every other open goes on to the kernel, unchanged
                  'other opens': [open('/tmp/other').read(), open('/etc/passwd').read().startswith('root:')]}))`, { profile: 'broker' });
      expect(out).toEqual({
        'os.open': { result: 'opened', data: secret },
        'open()': secret,
        'exists in the view': false,
        'other opens': ['mine', true],
      });
      expect(brokerEvents(r).filter((a) => a.decision === 'allowed')).toEqual([
        { kind: 'broker', path: '/run/secrets/db', decision: 'allowed', count: 2 },
      ]);
      expect(brokerEvents(r).filter((a) => a.decision === 'denied')).toEqual([]);
    });

    it('the fd names nothing of the host: a sealed memfd named after the sandbox path, read-only, one offset per open', async () => {
      const { out } = await pyJson(s, `${PY_OPEN}
import fcntl
fd = os.open('/run/secrets/db', os.O_RDONLY)
fd2 = os.open('/run/secrets/db', os.O_RDONLY)
first = os.read(fd, 4096).decode()
def reopen_and_write():
    w = os.open('/proc/self/fd/%d' % fd, os.O_RDWR)
    try:
        os.write(w, b'x')
    finally:
        os.close(w)
print(json.dumps({
  'readlink': os.readlink('/proc/self/fd/%d' % fd),
  'first open': first,
  'second open': os.read(fd2, 4096).decode(),
  'seals': fcntl.fcntl(fd, 1034) & 0xf,  # F_GET_SEALS: WRITE | GROW | SHRINK | SEAL (EXEC too on 6.3+)
  'write': attempt(lambda: os.write(fd, b'x')),
  'ftruncate': attempt(lambda: os.ftruncate(fd, 0)),
  'reopen for write, then write': attempt(reopen_and_write),
  'after': os.pread(fd2, 4096, 0).decode(),
}))`, { profile: 'broker' });
      expect(out).toEqual({
        readlink: '/memfd:db (deleted)',
        'first open': secret,
        'second open': secret,
        seals: 0xf,
        write: 'EBADF',
        ftruncate: expect.stringMatching(/^E(INVAL|BADF)$/),
        'reopen for write, then write': expect.stringMatching(/^E(PERM|ACCES)$/),
        after: secret,
      });
      expect(readFileSync(secretFile, 'utf8')).toBe(secret);
    });

    it('a brokered file over MAX_BROKERED_FILE_BYTES is refused with EFBIG and audited as denied; one of exactly that size is served whole', async () => {
      const { out, r } = await pyJson(s, `${PY_OPEN}
def size_of(path):
    with open(path, 'rb') as f:
        return len(f.read())
print(json.dumps({'big': attempt(lambda: size_of('/run/secrets/big')), 'edge': size_of('/run/secrets/edge')}))`, { profile: 'broker' });
      expect(out).toEqual({ big: 'EFBIG', edge: MAX_BROKERED_FILE_BYTES });
      expect(brokerEvents(r).filter((a) => a.path === '/run/secrets/big')).toEqual([
        { kind: 'broker', path: '/run/secrets/big', decision: 'denied', count: 1 },
      ]);
    });

    // [what, python expression returning an fd] — none may reach the secret.
    const TRICKS: Array<[string, string]> = [
      ['a `..` in the path', `os.open('/run/secrets/../secrets/db', os.O_RDONLY)`],
      ['a doubled slash', `os.open('/run//secrets/db', os.O_RDONLY)`],
      ['a relative path from /', `(os.chdir('/'), os.open('run/secrets/db', os.O_RDONLY))[1]`],
      ['a symlink in /tmp to the brokered path', `(os.symlink('/run/secrets/db', '/tmp/l'), os.open('/tmp/l', os.O_RDONLY))[1]`],
      ['O_WRONLY', `os.open('/run/secrets/db', os.O_WRONLY)`],
      ['O_RDWR', `os.open('/run/secrets/db', os.O_RDWR)`],
      ['O_RDONLY|O_TRUNC', `os.open('/run/secrets/db', os.O_RDONLY | os.O_TRUNC)`],
      ['O_WRONLY|O_CREAT', `os.open('/run/secrets/db', os.O_WRONLY | os.O_CREAT, 0o600)`],
      ['creat()', `libc.creat(b'/run/secrets/db', 0o600)`],
      ['Python open(..., "w")', `open('/run/secrets/db', 'w').fileno()`],
    ];

    it.each(TRICKS)('%s does not give the secret, nor any fd to it', async (_what, expr) => {
      const { out } = await pyJson(s, `${PY_OPEN}
print(json.dumps(read_via(lambda: ${expr})))`, { profile: 'broker' });
      expect(out.result).not.toBe('opened');
      expect(out.leaked).toBe(false);
      expect(JSON.stringify(out)).not.toContain(secret);
    });

    it('openat2 asking to write does not get an fd to the secret', async () => {
      // The broker takes the access mode of open/openat from the flags argument; openat2
      // carries it in struct open_how (args[2] points to it), which the broker must read too.
      const { out, r } = await pyJson(s, `${PY_OPEN}
def openat2(flags):
    how = (ctypes.c_uint64 * 3)(flags, 0, 0)
    return libc.syscall(ctypes.c_long(${nr('openat2')}), ctypes.c_long(-100), ctypes.c_char_p(b'/run/secrets/db'),
                        ctypes.byref(how), ctypes.c_long(24))
print(json.dumps({'read': read_via(lambda: openat2(os.O_RDONLY)),
                  'write': read_via(lambda: openat2(os.O_WRONLY)),
                  'rdwr|trunc': read_via(lambda: openat2(os.O_RDWR | os.O_TRUNC))}))`, { profile: 'broker' });
      expect(out.read).toEqual({ result: 'opened', data: secret });
      expect(out.write.result, JSON.stringify(out.write)).not.toBe('opened');
      expect(out['rdwr|trunc'].result, JSON.stringify(out['rdwr|trunc'])).not.toBe('opened');
      expect(brokerEvents(r).filter((a) => a.decision === 'allowed').reduce((n, a) => n + a.count, 0)).toBe(1);
    });

    it('the audit has one entry per path and decision, whichever open syscall served it', async () => {
      // The response's broker events carry no syscall number: two entries with the same
      // path and decision are not deduplicated, as far as a reader can tell.
      const { r } = await pyJson(s, `${PY_OPEN}
how = (ctypes.c_uint64 * 3)(os.O_RDONLY, 0, 0)
fd = libc.syscall(ctypes.c_long(${nr('openat2')}), ctypes.c_long(-100), ctypes.c_char_p(b'/run/secrets/db'), ctypes.byref(how), ctypes.c_long(24))
os.close(fd)
os.close(os.open('/run/secrets/db', os.O_RDONLY))
print(json.dumps(fd >= 0))`, { profile: 'broker' });
      expect(brokerEvents(r)).toEqual([{ kind: 'broker', path: '/run/secrets/db', decision: 'allowed', count: 2 }]);
    });

    it('a brokered open with the fd table full fails with EMFILE instead of hanging', async () => {
      // When SECCOMP_IOCTL_NOTIF_ADDFD fails, the broker must still answer the call.
      const { out, r } = await pyJson(s, `${PY_OPEN}
import threading
fds = []
try:
    while True:
        fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError as e:
    filled = errno.errorcode[e.errno]
res = {'filled': filled}
def brokered():
    res['brokered'] = attempt(lambda: os.open('/run/secrets/db', os.O_RDONLY))
t = threading.Thread(target=brokered, daemon=True)
t.start()
t.join(${5 * timeScale()})
res['returned'] = not t.is_alive()
for fd in fds: os.close(fd)
res['after closing'] = attempt(lambda: os.close(os.open('/run/secrets/db', os.O_RDONLY)))
print(json.dumps(res), flush=True)
os._exit(0)  # a thread still blocked in open() must not keep the function alive`, { profile: 'broker', limits: { timeoutMs: scaledMs(20_000, 60_000) } });
      expect(r.status).toBe('ok');
      expect(out).toEqual({ filled: 'EMFILE', returned: true, brokered: 'EMFILE', 'after closing': 'ok' });
    });

    it('a brokered entry whose host source is a symlink is refused (ELOOP), and audited as denied', async () => {
      const { out, r } = await pyJson(s, `${PY_OPEN}
print(json.dumps(read_via(lambda: os.open('/run/secrets/link', os.O_RDONLY))))`, { profile: 'broker' });
      expect(out).toEqual({ result: 'ELOOP', leaked: false });
      expect(brokerEvents(r)).toEqual([{ kind: 'broker', path: '/run/secrets/link', decision: 'denied', count: 1 }]);
    });

    it('a brokered entry whose host source has a symlink among its parent directories is refused too (ELOOP)', async () => {
      // broker.c promises "no symlink … on the way, whatever was put at the host path": a
      // host user able to swap a directory of the source for a symlink must not be able to
      // point the (root) broker at another host file.
      const { out, r } = await pyJson(s, `${PY_OPEN}
print(json.dumps(read_via(lambda: os.open('/run/secrets/parent-link', os.O_RDONLY))))`, { profile: 'broker' });
      expect(out).toEqual({ result: 'ELOOP', leaked: false });
      expect(brokerEvents(r)).toEqual([{ kind: 'broker', path: '/run/secrets/parent-link', decision: 'denied', count: 1 }]);
    });

    // A slow (emulated) machine makes proportionally fewer opens within the function's time limit.
    const opens = Math.round(100_000 / timeScale());
    it(`a thread flipping the path buffer between the brokered path and /etc/shadow for ${opens} opens never opens anything but the secret`, async () => {
      // The flipper is a machine-code loop (GIL released, so it truly runs beside the
      // opener) rewriting the ctypes buffer in place, 16 bytes at a time:
      //   mov r8..r11, [rsi..rsi+24]; 1: mov [rdi], r8; mov [rdi+8], r9; mov [rdi], r10;
      //   mov [rdi+8], r11; inc rax; cmp qword [rsi+32], 0; je 1b; ret
      // The opener passes the same buffer address to libc.open 100 000 times.
      const { out, r } = await pyJson(
        s,
        `
import ctypes, mmap, os, threading, json, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.open.argtypes = [ctypes.c_void_p, ctypes.c_int]
SECRET = ${JSON.stringify(secret)}.encode()
st = os.stat('/etc/shadow')  # present in this view: only Landlock and DAC guard it
buf = ctypes.create_string_buffer(b'/run/secrets/db\\0', 64)
src = ctypes.create_string_buffer(b'/run/secrets/db\\0' + b'/etc/shadow'.ljust(16, b'\\0') + b'\\0' * 16, 48)
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex('4c8b064c8b4e084c8b56104c8b5e184831c04c89074c894f084c89174c895f0848ffc048837e200074e8c3'))
flip = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
flips = []
t = threading.Thread(target=lambda: flips.append(flip(ctypes.addressof(buf), ctypes.addressof(src))))
t.start()
res = {'secret': 0, 'other': [], 'errors': {}}
fds_before = len(os.listdir('/proc/self/fd'))
for _ in range(${opens}):
    fd = libc.open(ctypes.addressof(buf), os.O_RDONLY)
    if fd < 0:
        e = errno.errorcode.get(ctypes.get_errno(), '?')
        res['errors'][e] = res['errors'].get(e, 0) + 1
        continue
    data = os.read(fd, 4096)
    os.close(fd)
    if data == SECRET:
        res['secret'] += 1
    elif len(res['other']) < 5:
        res['other'].append(data[:80].decode(errors='replace'))
ctypes.memset(ctypes.addressof(src) + 32, 1, 8)
t.join()
res['flips'] = flips[0]
res['fds leaked'] = len(os.listdir('/proc/self/fd')) - fds_before
print(json.dumps(res))`,
        // The broker's CPU budget is a tenth of the limit: both grow on a slow machine.
        { profile: 'broker-etc', limits: { timeoutMs: scaledMs(60_000) } },
      );
      expect(out.other).toEqual([]);
      expect(out['fds leaked']).toBe(0);
      // Both sides of the race were exercised: the secret was served, /etc/shadow was refused.
      expect(out.secret).toBeGreaterThan(0);
      expect(out.errors.EACCES ?? 0).toBeGreaterThan(0);
      expect(out.secret + Object.values(out.errors as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(opens);
      expect(Object.keys(out.errors).sort()).toEqual(expect.arrayContaining(['EACCES']));
      for (const e of Object.keys(out.errors)) expect(['EACCES', 'ENOENT']).toContain(e);
      expect(out.flips).toBeGreaterThan(opens);
      expect(brokerEvents(r)).toEqual([{ kind: 'broker', path: '/run/secrets/db', decision: 'allowed', count: out.secret }]);
      console.log(`race: ${out.secret} secret, ${JSON.stringify(out.errors)}, ${out.flips} flips in ${r.durationMs} ms`);
    }, scaledMs(90_000));
  });

  it("a sandbox's process tree holds no broker: the supervisor's only child is init, and init's only child the function", async () => {
    const marker = processMarker();
    const pending = run(s, 'python', `import ctypes, time
${pyNameSelf(marker)}
time.sleep(${2 * timeScale()})  # time for the test to look at the tree`, { profile: 'broker' });
    const sb = await pollFor(() => sandboxByMarker(s.pid, marker), scaledMs(5000));
    expect(sb, 'the sandbox of the invocation was not found on the host').not.toBeNull();
    // The seccomp listener is the supervisor's own: no process of ours beside init and the function.
    expect(sb!.tree.map((p) => [p.pid, p.ppid])).toEqual([
      [sb!.init.pid, sb!.supervisor.pid],
      [sb!.fn.pid, sb!.init.pid],
    ].sort((x, y) => x[0]! - y[0]!));
    expect((await pending).status).toBe('ok');
  });

  it('SIGKILL of the supervisor while the function loops over a brokered open: no call succeeds after it, and nothing is left behind', async () => {
    // The supervisor answers the notifications itself; it is the only holder of the
    // listener. When it dies the kernel answers every pending and later notified call with
    // ENOSYS, and the sandbox dies with it (PDEATHSIG of init). The function logs each
    // open's outcome to its /tmp, which the test holds open from the host, so the log
    // outlives the sandbox: successes, then only failures.
    const marker = processMarker();
    const pending = s.request('/invoke', {
      body: {
        runtime: 'python',
        profile: 'broker',
        // Only a bound (the supervisor is killed long before): at most the profile's max.
        limits: { timeoutMs: scaledMs(30_000, 60_000) },
        code: `import ctypes, errno, os
${pyNameSelf(marker)}
log = os.open('/tmp/fail-closed.log', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
while True:
    try:
        os.close(os.open('/run/secrets/db', os.O_RDONLY))
        os.write(log, b'ok\\n')
    except OSError as e:
        os.write(log, (errno.errorcode.get(e.errno, str(e.errno)) + '\\n').encode())`,
      },
    });
    const sb = await pollFor(() => sandboxByMarker(s.pid, marker), scaledMs(5000));
    if (sb === null) {
      const early = await Promise.race([pending, sleep(0).then(() => null)]);
      expect(sb, `the sandbox of the invocation was not found on the host (answer so far: ${JSON.stringify(early?.body ?? null)})`).not.toBeNull();
    }
    const logPath = `/proc/${sb!.fn.pid}/root/tmp/fail-closed.log`;
    const served = (): boolean => {
      try {
        return (readFileSync(logPath, 'utf8').match(/ok\n/g)?.length ?? 0) >= 100;
      } catch {
        return false;
      }
    };
    expect(await pollFor(() => (served() ? true : null), scaledMs(5000), 20), 'the function never got its secret').toBe(true);
    const log = openSync(logPath, 'r');
    try {
      process.kill(sb!.supervisor.pid, 'SIGKILL');
      const answer = await pending;
      expect(answer.status).toBe(502);
      expect(answer.body.error.code).toBe('SANDBOX_FAILED');
      // Nothing of that sandbox is left: no process, no cgroup folder.
      const pids = [sb!.fn.pid, sb!.init.pid, sb!.supervisor.pid];
      const left = (): string[] => [
        ...pids.filter((p) => hostProcess(p) !== null).map((p) => `process ${p}`),
        ...serverLeftovers(s).filter((l) => sb!.cgroups.some((c) => l.includes(`/${c}`))),
      ];
      const last = await pollFor(() => (left().length === 0 ? [] : null), scaledMs(3000), 50);
      expect(last, left().join('\n')).toEqual([]);
      const lines = readFileSync(log, 'utf8').split('\n').slice(0, -1);
      const firstFailure = lines.findIndex((l) => l !== 'ok');
      const after = firstFailure < 0 ? [] : lines.slice(firstFailure);
      console.log(`fail closed: ${firstFailure < 0 ? lines.length : firstFailure} opens served, then ${JSON.stringify(after.slice(0, 5))}${after.length > 5 ? ` … (${after.length})` : ''}`);
      expect(lines.slice(0, 100)).toEqual(Array(100).fill('ok'));
      // Once one call failed, none succeeded; a failure is the kernel's ENOSYS of a gone listener.
      expect(after.filter((l) => l !== 'ENOSYS')).toEqual([]);
    } finally {
      closeSync(log);
    }
  });

  // A slow (emulated) machine gets a proportionally smaller flood: the same proof, within the same time limit.
  const perThread = Math.round(20_000 / timeScale());
  it(`16 threads flooding the broker with ${16 * perThread} denied calls finish in time, deduplicated, while another invocation runs normally`, async () => {
    const names = ['ptrace', 'bpf', 'mount', 'process_vm_readv'];
    const marker = processMarker();
    const flood = run(
      s,
      'python',
      `${PY_SYSCALL}
import threading
${pyNameSelf(marker)}
NRS = ${JSON.stringify(names.map(nr))}
seen = {}
def worker(i):
    errs = set()
    for _ in range(${perThread}):
        errs.add(sc(NRS[i % len(NRS)], -1, 1, 1, 0, 0))
    seen[i] = sorted(errs)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(sorted({e for v in seen.values() for e in v})))`,
      // The broker's CPU budget is a tenth of the limit: under TCG a notification costs the
      // broker far more than the scale says, so the limit (not what this test checks) grows.
      { profile: 'flood', limits: { timeoutMs: scaledMs(45_000) } },
    );
    // The flood's supervisor (which answers the notifications), sampled from the host while
    // it works: fds and memory stay flat.
    const supervisor = await pollFor(() => sandboxByMarker(s.pid, marker)?.supervisor, scaledMs(5000));
    expect(supervisor, 'the supervisor of the flood was not found on the host').not.toBeNull();
    const samples: Array<{ fds: number; rssKb: number }> = [];
    const sample = (): void => {
      try {
        const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${supervisor!.pid}/status`, 'utf8'))?.[1]);
        // An exiting supervisor (a zombie) has no VmRSS: the flood is over.
        if (Number.isFinite(rssKb)) samples.push({ fds: readdirSync(`/proc/${supervisor!.pid}/fd`).length, rssKb });
      } catch {
        // the supervisor is gone: the flood is over
      }
    };
    sample();
    const sampler = setInterval(sample, 100);
    // Meanwhile, an ordinary invocation on its own sandbox and broker.
    await new Promise((res) => setTimeout(res, 300));
    const other = await run(s, 'bash', 'echo "$((6 * 7))"');
    const r = await flood;
    clearInterval(sampler);
    // The first samples see the broker fault in its code and tables; after that, the
    // remaining notifications must not grow it.
    expect(samples.length).toBeGreaterThan(10);
    const settled = samples[Math.min(5, samples.length - 1)]!;
    expect(Math.max(...samples.map((x) => x.fds))).toBe(samples[0]!.fds);
    expect(Math.max(...samples.slice(5).map((x) => x.rssKb)) - settled.rssKb).toBeLessThan(256);
    expect(other).toMatchObject({ status: 'ok', stdout: '42\n' });
    expect(r.status, `${r.reason}: ${r.stderr}`).toBe('ok');
    expect(JSON.parse(r.stdout)).toEqual(['EPERM']);
    const denied = seccompEvents(r).filter((a) => a.syscall !== 'clone3');
    expect(denied.map((a) => [a.syscall, a.action, a.count]).sort()).toEqual(
      names.map((n) => [n, 'errno', 4 * perThread]).sort(),
    );
    expect(r.audit.length).toBeLessThanOrEqual(names.length + 1);
    console.log(
      `flood: ${r.durationMs} ms for ${16 * perThread} notifications (trusted side ${String(r.brokerCpuMs)} ms of CPU); the other invocation took ${other.durationMs} ms; ` +
        `supervisor: ${samples[0]!.fds} fds, RSS ${samples[0]!.rssKb} kB at start, ${settled.rssKb} kB settled, ${Math.max(...samples.map((x) => x.rssKb))} kB max`,
    );
  }, scaledMs(90_000));

  it("a storm of denied calls from 16 threads at cpus 0.5: the trusted side's CPU is reported, charged, and bounded by its budget", async () => {
    // Every denied call is a notification the broker (outside the sandbox's cgroup) answers:
    // without a bound, 16 threads made it burn about as much CPU as the invocation itself.
    const made = await s.request('/admin/tenants', { auth: 'admin', body: { name: `storm-${token()}` } });
    expect(made.status).toBe(201);
    const name = made.body.tenant.name as string;
    const timeoutMs = 8000;
    const cpus = 0.5;
    const budgetMs = trustedBudgetMs(timeoutMs, cpus);
    const storm = await s.request('/invoke', {
      auth: { bearer: made.body.apiKey },
      body: {
        runtime: 'python',
        code: brokerStormPython(nr('ptrace')),
        limits: { timeoutMs, cpus },
      },
    });
    expect(storm.status).toBe(200);
    const r = storm.body;
    console.log(`storm: cpuMs=${r.cpuMs} brokerCpuMs=${r.brokerCpuMs} budget=${budgetMs} status=${r.status}/${r.reason}`);
    // Ended by the budget, not by the timeout: the broker's CPU, not the wall clock, decided.
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 'killed', reason: 'broker-cpu' });
    expect(r.audit).toContainEqual({ kind: 'limit', limit: 'broker-cpu' });
    expect(seccompEvents(r).find((a) => a.syscall === 'ptrace')?.count).toBeGreaterThan(0);
    // Reported and bounded: past the budget by at most one 50 ms check of one busy broker
    // (plus the supervisor's own share), never the invocation's whole allowance.
    expect(r.brokerCpuMs).toBeGreaterThan(budgetMs);
    expect(r.brokerCpuMs).toBeLessThan(budgetMs + 150);
    // Charged: the tenant's window holds the sandbox's CPU and the trusted side's.
    const usage = await s.request(`/admin/tenants/${name}`, { auth: 'admin' });
    expect(usage.body.usage.cpuMsInWindow).toBeGreaterThanOrEqual(Math.floor(r.cpuMs + r.brokerCpuMs - 1));
  }, scaledMs(60_000));

  it('stopping the server leaves no cgroup, supervisor or mount of it behind', async () => {
    stopped = true;
    expect(await s.stop(), `the server's exit code on SIGTERM; its log:\n${s.logs().split('\n').slice(-20).join('\n')}`).toBe(0);
    expect(serverLeftovers(s)).toEqual([]);
  });
});
