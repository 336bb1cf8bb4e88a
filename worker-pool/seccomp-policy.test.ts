// Layer B without root: the seccomp program the supervisor would load, compiled from the
// real profiles (`zviz-supervisor --export-bpf` < spec) and run here by a small
// classic-BPF interpreter over synthetic `struct seccomp_data`. A policy regression (a
// syscall that slips into ALLOW, a deny that a profile can undo, a broken arch check)
// shows up as a wrong return value, without loading anything into a kernel.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadProfiles, type Profile, type Runtime, SOCKET_FAMILIES as AF } from '../profiles/index.js';
import {
  ADDR_NO_RANDOMIZE,
  ALWAYS_ALLOWED,
  ALWAYS_DENIED,
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  CLONE_NEWUSER,
  FIONREAD,
  READ_IMPLIES_EXEC,
  TCGETS,
  TIOCLINUX,
  TIOCSTI,
  X32_SYSCALL_BIT,
  syscallTableUnavailable,
  x86_64Syscalls,
} from '../test/support/syscall-table.js';
import { encodeSpec, type HostLayout } from './spec.js';
import { imageTask, inlineTask, type SandboxTask } from './task.js';

const SUPERVISOR = fileURLToPath(new URL('../native/build/zviz-supervisor', import.meta.url));
const PROFILES_DIR = fileURLToPath(new URL('../profiles', import.meta.url));
const SECCOMP_C = fileURLToPath(new URL('../native/src/seccomp.c', import.meta.url));

const RET = { KILL_PROCESS: 0x80000000, USER_NOTIF: 0x7fc00000, ALLOW: 0x7fff0000 } as const;
const RET_NAME = new Map<number, string>(Object.entries(RET).map(([k, v]) => [v, k]));
const name = (ret: number): string => RET_NAME.get(ret) ?? `0x${ret.toString(16)}`;

// ---------------------------------------------------------------------------------------
// A classic-BPF interpreter, as the kernel's seccomp runs it (net/core/filter.c,
// seccomp_check_filter): 32-bit A and X, 16 scratch words, loads only from seccomp_data.
// Anything it does not know fails the test rather than guessing.

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

function decodeProgram(buf: Buffer): Insn[] {
  if (buf.length === 0 || buf.length % 8 !== 0) throw new Error(`BPF program of ${buf.length} bytes is not a list of 8-byte insns`);
  const out: Insn[] = [];
  for (let off = 0; off < buf.length; off += 8) {
    out.push({ code: buf.readUInt16LE(off), jt: buf.readUInt8(off + 2), jf: buf.readUInt8(off + 3), k: buf.readUInt32LE(off + 4) });
  }
  return out;
}

const SECCOMP_DATA_BYTES = 64;

interface SeccompData {
  nr: number;
  arch?: number;
  ip?: bigint;
  args?: Array<bigint | number>;
}

function seccompData(d: SeccompData): Buffer {
  const b = Buffer.alloc(SECCOMP_DATA_BYTES);
  b.writeInt32LE(d.nr, 0);
  b.writeUInt32LE(d.arch ?? AUDIT_ARCH_X86_64, 4);
  b.writeBigUInt64LE(d.ip ?? 0x401000n, 8);
  (d.args ?? []).forEach((a, i) => b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(a)), 16 + 8 * i));
  return b;
}

/** Runs `prog` over `data`; returns the 32-bit return value. Throws on anything the kernel would refuse. */
function runBpf(prog: Insn[], input: SeccompData): number {
  const data = seccompData(input);
  const mem = new Uint32Array(16);
  let A = 0;
  let X = 0;
  const u32 = (v: number): number => v >>> 0;
  for (let pc = 0; pc < prog.length; pc++) {
    const { code, jt, jf, k } = prog[pc]!;
    const cls = code & 0x07;
    const where = `insn ${pc} (code 0x${code.toString(16)}, k 0x${k.toString(16)})`;
    switch (cls) {
      case 0x00: // LD
      case 0x01: {
        // LDX
        const size = code & 0x18;
        const mode = code & 0xe0;
        let v: number;
        if (mode === 0x00) v = k; // IMM
        else if (mode === 0x80) v = SECCOMP_DATA_BYTES; // LEN
        else if (mode === 0x60) {
          if (k > 15) throw new Error(`${where}: scratch index out of range`);
          v = mem[k]!;
        } else if (mode === 0x20 && cls === 0x00 && size === 0x00) {
          // LD W ABS: seccomp only permits aligned 32-bit loads inside seccomp_data.
          if (k % 4 !== 0 || k + 4 > SECCOMP_DATA_BYTES) throw new Error(`${where}: load outside seccomp_data`);
          v = data.readUInt32LE(k);
        } else throw new Error(`${where}: unsupported load (mode 0x${mode.toString(16)}, size 0x${size.toString(16)})`);
        if (cls === 0x00) A = u32(v);
        else X = u32(v);
        break;
      }
      case 0x02: // ST
        if (k > 15) throw new Error(`${where}: scratch index out of range`);
        mem[k] = A;
        break;
      case 0x03: // STX
        if (k > 15) throw new Error(`${where}: scratch index out of range`);
        mem[k] = X;
        break;
      case 0x04: {
        // ALU
        const src = code & 0x08 ? X : k;
        const op = code & 0xf0;
        switch (op) {
          case 0x00: A = u32(A + src); break;
          case 0x10: A = u32(A - src); break;
          case 0x20: A = u32(Math.imul(A, src)); break;
          case 0x30:
            if (src === 0) return 0; // division by zero ends the program with 0 (KILL_THREAD)
            A = u32(Math.floor(A / src));
            break;
          case 0x40: A = u32(A | src); break;
          case 0x50: A = u32(A & src); break;
          case 0x60: A = src >= 32 ? 0 : u32(A << src); break;
          case 0x70: A = src >= 32 ? 0 : A >>> src; break;
          case 0x80: A = u32(-A); break;
          case 0x90:
            if (src === 0) return 0;
            A = u32(A % src);
            break;
          case 0xa0: A = u32(A ^ src); break;
          default: throw new Error(`${where}: unknown ALU op 0x${op.toString(16)}`);
        }
        break;
      }
      case 0x05: {
        // JMP
        const op = code & 0xf0;
        if (op === 0x00) {
          pc += k; // JA
        } else {
          const src = code & 0x08 ? X : k;
          let cond: boolean;
          if (op === 0x10) cond = A === u32(src);
          else if (op === 0x20) cond = A > u32(src);
          else if (op === 0x30) cond = A >= u32(src);
          else if (op === 0x40) cond = (A & src) !== 0;
          else throw new Error(`${where}: unknown jump op 0x${op.toString(16)}`);
          pc += cond ? jt : jf;
        }
        if (pc + 1 >= prog.length) throw new Error(`${where}: jump past the end of the program`);
        break;
      }
      case 0x06: // RET
        if ((code & 0x18) === 0x10) return A; // RET A
        if ((code & 0x18) === 0x00) return k; // RET K
        throw new Error(`${where}: unknown return source`);
      case 0x07: // MISC
        if ((code & 0xf8) === 0x00) X = A; // TAX
        else if ((code & 0xf8) === 0x80) A = X; // TXA
        else throw new Error(`${where}: unknown misc op`);
        break;
      default:
        throw new Error(`${where}: unknown instruction class`);
    }
  }
  throw new Error('program fell off its end without a return');
}

// ---------------------------------------------------------------------------------------

const skip = syscallTableUnavailable() ?? (existsSync(SUPERVISOR) ? null : `${SUPERVISOR} not built: run \`make -C native\``);

function exportBpf(task: SandboxTask): { status: number | null; stderr: string; prog: Buffer } {
  // Nothing of the host layout reaches the filter; `as` keeps this valid while HostLayout grows.
  const host = { rootBase: '/nonexistent', uidBase: 1_000_000_000, cgroup: null, network: null } as HostLayout;
  const spec = encodeSpec(task, 'bpf-export', host);
  const r = spawnSync(SUPERVISOR, ['--export-bpf'], { input: spec, maxBuffer: 1 << 20, timeout: 10_000 });
  return { status: r.status, stderr: r.stderr.toString(), prog: r.stdout };
}

describe.skipIf(skip !== null)('the compiled seccomp program (zviz-supervisor --export-bpf)', () => {
  const NR = skip === null ? x86_64Syscalls() : new Map<string, number>();
  const nr = (n: string): number => {
    const v = NR.get(n);
    if (v === undefined) throw new Error(`no x86_64 syscall named ${n}`);
    return v;
  };
  let profile: Profile;
  const programs = new Map<string, Insn[]>();

  /** A runtime's task, or a program of an OCI image (the `image` class). */
  function taskFor(runtime: Runtime | 'image', edit: (t: SandboxTask) => void = () => {}): SandboxTask {
    const t =
      runtime === 'image'
        ? imageTask({
            id: 'bpf-export',
            image: { digest: 'sha256:0', rootfs: '/nonexistent', env: [], entrypoint: ['/bin/sh'], cmd: [], workingDir: '/', user: { uid: 0, gid: 0 } },
            limits: profile.limits.defaults,
            profile,
          })
        : inlineTask({ id: 'bpf-export', runtime, code: '', limits: profile.limits.defaults, profile });
    edit(t);
    return t;
  }
  function compile(task: SandboxTask): Insn[] {
    const r = exportBpf(task);
    expect(r.stderr, 'zviz-supervisor --export-bpf stderr').toBe('');
    expect(r.status).toBe(0);
    return decodeProgram(r.prog);
  }
  const program = (runtime: Runtime | 'image'): Insn[] => programs.get(runtime)!;

  beforeAll(() => {
    profile = loadProfiles(PROFILES_DIR).get('default')!;
    for (const rt of ['node', 'python', 'bash', 'image'] as const) programs.set(rt, compile(taskFor(rt)));
  });

  it("the suite's always-denied and always-allowed lists are native/src/seccomp.c's", () => {
    // Drift either way needs a look: a new entry there is untested here, a lost one is a hole.
    const src = readFileSync(SECCOMP_C, 'utf8');
    const list = (name: string): string[] => {
      const m = new RegExp(`${name}\\[\\]\\s*=\\s*\\{([^}]*)\\}`).exec(src);
      if (!m) throw new Error(`${name} not found in ${SECCOMP_C}`);
      return [...m[1]!.matchAll(/"([a-z0-9_]+)"/g)].map((x) => x[1]!);
    };
    expect(list('ALWAYS_DENIED').sort()).toEqual([...ALWAYS_DENIED, 'clone3'].sort());
    expect(list('ALWAYS_ALLOWED').sort()).toEqual([...ALWAYS_ALLOWED].sort());
  });

  it('exports a program the kernel would accept: at most 4096 insns, every jump in range, ending in a return', () => {
    for (const [rt, prog] of programs) {
      expect(prog.length, rt).toBeGreaterThan(10);
      expect(prog.length, rt).toBeLessThanOrEqual(4096);
      prog.forEach((ins, pc) => {
        if ((ins.code & 0x07) !== 0x05) return;
        const targets = (ins.code & 0xf0) === 0 ? [pc + 1 + ins.k] : [pc + 1 + ins.jt, pc + 1 + ins.jf];
        for (const t of targets) expect(t, `${rt} insn ${pc}`).toBeLessThan(prog.length);
      });
      expect(prog[prog.length - 1]!.code & 0x07, `${rt}: last insn is a return`).toBe(0x06);
    }
  });

  /** First arguments that the argument rules allow; every other syscall is tried with zeros. */
  const HARMLESS_ARGS: Record<string, number[]> = { personality: [0xffffffff], socket: [AF.AF_UNIX], socketpair: [AF.AF_UNIX] };

  describe.each(['node', 'python', 'bash', 'image'] as const)('runtime %s', (rt) => {
    it('allows every syscall of its allowlist (clone, personality and socket with harmless arguments)', () => {
      const allow = taskFor(rt).profile.seccompAllow;
      expect(allow.length).toBeGreaterThan(100);
      const wrong = allow
        .map((n) => [n, name(runBpf(program(rt), { nr: nr(n), args: HARMLESS_ARGS[n] ?? [] }))] as const)
        .filter(([, r]) => r !== 'ALLOW');
      expect(wrong).toEqual([]);
    });

    it.each(['read', 'write', 'openat', 'mmap', 'close', 'exit_group', 'futex', 'execve', 'rt_sigreturn'])('allows %s', (n) => {
      expect(name(runBpf(program(rt), { nr: nr(n) }))).toBe('ALLOW');
    });

    it('sends every syscall outside allowlist ∪ always-allowed to the broker (USER_NOTIF)', () => {
      const allowed = new Set<string>([...taskFor(rt).profile.seccompAllow, ...ALWAYS_ALLOWED]);
      const wrong = [...NR]
        .filter(([n]) => !allowed.has(n))
        .map(([n, v]) => [n, name(runBpf(program(rt), { nr: v, args: [1, 1, 1, 1, 1, 1] }))] as const)
        .filter(([, r]) => r !== 'USER_NOTIF');
      expect(wrong).toEqual([]);
    });

    it.each(ALWAYS_DENIED.map((n) => [n]))('never allows %s', (n) => {
      expect(name(runBpf(program(rt), { nr: nr(n), args: [0, 0, 0, 0, 0, 0] }))).toBe('USER_NOTIF');
    });
  });

  it.each(['node', 'python', 'bash', 'image'] as const)(
    'the always-denied list wins over a %s allowlist that names every one of them and clone3',
    (rt) => {
      const prog = compile(taskFor(rt, (t) => t.profile.seccompAllow.push(...ALWAYS_DENIED, 'clone3')));
      const wrong = [...ALWAYS_DENIED, 'clone3']
        .map((n) => [n, name(runBpf(prog, { nr: nr(n) }))] as const)
        .filter(([, r]) => r !== 'USER_NOTIF');
      expect(wrong).toEqual([]);
      // and the rest of the allowlist still stands
      expect(name(runBpf(prog, { nr: nr('read') }))).toBe('ALLOW');
    },
  );

  // [what, seccomp_data, expected] — run against every runtime's program.
  const ARG_CASES: Array<[string, keyof typeof RET, () => SeccompData]> = [
    ['clone(SIGCHLD) (fork)', 'ALLOW', () => ({ nr: nr('clone'), args: [17] })],
    ['clone(CLONE_VM|CLONE_THREAD|…) (a thread)', 'ALLOW', () => ({ nr: nr('clone'), args: [0x3d0f00] })],
    ['clone(CLONE_NEWUSER|SIGCHLD)', 'USER_NOTIF', () => ({ nr: nr('clone'), args: [CLONE_NEWUSER | 17] })],
    ['clone(CLONE_NEWNET)', 'USER_NOTIF', () => ({ nr: nr('clone'), args: [0x40000000] })],
    ['clone(CLONE_NEWNS)', 'USER_NOTIF', () => ({ nr: nr('clone'), args: [0x00020000] })],
    ['clone(CLONE_NEWPID)', 'USER_NOTIF', () => ({ nr: nr('clone'), args: [0x20000000] })],
    ['clone(CLONE_NEWCGROUP)', 'USER_NOTIF', () => ({ nr: nr('clone'), args: [0x02000000] })],
    ['clone(CLONE_NEWUTS)', 'USER_NOTIF', () => ({ nr: nr('clone'), args: [0x04000000] })],
    ['clone(CLONE_NEWIPC)', 'USER_NOTIF', () => ({ nr: nr('clone'), args: [0x08000000] })],
    ['clone3', 'USER_NOTIF', () => ({ nr: nr('clone3'), args: [1, 88] })],
    ['ioctl(TIOCSTI)', 'USER_NOTIF', () => ({ nr: nr('ioctl'), args: [0, TIOCSTI, 1] })],
    ['ioctl(TIOCSTI | 1 << 32): the kernel ignores the high half', 'USER_NOTIF', () => ({ nr: nr('ioctl'), args: [0, 0x1_0000_0000n | BigInt(TIOCSTI), 1] })],
    ['ioctl(TIOCSTI | 0xffffffff << 32)', 'USER_NOTIF', () => ({ nr: nr('ioctl'), args: [0, 0xffff_ffff_0000_0000n | BigInt(TIOCSTI), 1] })],
    ['ioctl(TIOCLINUX)', 'USER_NOTIF', () => ({ nr: nr('ioctl'), args: [0, TIOCLINUX, 1] })],
    ['ioctl(TIOCLINUX | 1 << 32)', 'USER_NOTIF', () => ({ nr: nr('ioctl'), args: [0, 0x1_0000_0000n | BigInt(TIOCLINUX), 1] })],
    ['ioctl(FIONREAD)', 'ALLOW', () => ({ nr: nr('ioctl'), args: [0, FIONREAD, 1] })],
    ['ioctl(TCGETS)', 'ALLOW', () => ({ nr: nr('ioctl'), args: [0, TCGETS, 1] })],
    ['ioctl(fd 0x5412, TCGETS): only the command word counts', 'ALLOW', () => ({ nr: nr('ioctl'), args: [TIOCSTI, TCGETS, TIOCSTI] })],
    ['personality(0xffffffff) (query)', 'ALLOW', () => ({ nr: nr('personality'), args: [0xffffffff] })],
    ['personality(PER_LINUX)', 'ALLOW', () => ({ nr: nr('personality'), args: [0] })],
    ['personality(ADDR_NO_RANDOMIZE)', 'USER_NOTIF', () => ({ nr: nr('personality'), args: [ADDR_NO_RANDOMIZE] })],
    ['personality(READ_IMPLIES_EXEC)', 'USER_NOTIF', () => ({ nr: nr('personality'), args: [READ_IMPLIES_EXEC] })],
    ['personality(1 << 32 | READ_IMPLIES_EXEC): high bits do not disguise a change', 'USER_NOTIF', () => ({ nr: nr('personality'), args: [0x1_0000_0000n | BigInt(READ_IMPLIES_EXEC)] })],
    ['any syscall with arch AUDIT_ARCH_I386', 'KILL_PROCESS', () => ({ nr: 20, arch: AUDIT_ARCH_I386 })],
    ['read with arch AUDIT_ARCH_I386', 'KILL_PROCESS', () => ({ nr: 3, arch: AUDIT_ARCH_I386 })],
    ['an unknown architecture (AArch64)', 'KILL_PROCESS', () => ({ nr: nr('read'), arch: 0xc00000b7 })],
    ['x32 getpid (39 | 0x40000000)', 'KILL_PROCESS', () => ({ nr: nr('getpid') | X32_SYSCALL_BIT })],
    ['x32 read (0 | 0x40000000)', 'KILL_PROCESS', () => ({ nr: X32_SYSCALL_BIT })],
    ['x32 ioctl(TIOCSTI): the x32 kill comes first', 'KILL_PROCESS', () => ({ nr: nr('ioctl') | X32_SYSCALL_BIT, args: [0, TIOCSTI] })],
    ['a syscall number past the table (1000)', 'USER_NOTIF', () => ({ nr: 1000 })],
    // -1 carries the x32 bit: the prefix kills it (libseccomp alone would let it through to its default)
    ['nr -1 (0xffffffff)', 'KILL_PROCESS', () => ({ nr: -1 })],
  ];

  describe.each(['node', 'python', 'bash'] as const)('arguments and architectures, runtime %s', (rt) => {
    it.each(ARG_CASES)('%s → %s', (_what, expected, data) => {
      expect(name(runBpf(program(rt), data()))).toBe(expected);
    });
  });

  describe('socket address families', () => {
    // Every family number the kernel knows (0 to AF_MAX - 1 = 45) and a few it does not.
    const FAMILIES = [...Array(64).keys()];
    const verdicts = (prog: Insn[], call: 'socket' | 'socketpair'): Record<number, string> =>
      Object.fromEntries(FAMILIES.map((f) => [f, name(runBpf(prog, { nr: nr(call), args: [f, 1, 0, 1] }))]));
    const expected = (allowed: readonly number[]): Record<number, string> =>
      Object.fromEntries(FAMILIES.map((f) => [f, allowed.includes(f) ? 'ALLOW' : 'USER_NOTIF']));

    it('the table has every family from 0 to AF_MAX - 1 (45), AF_VSOCK at 40', () => {
      expect(Object.values(AF).sort((a, b) => a - b)).toEqual([...Array(46).keys()]);
      expect(AF.AF_VSOCK).toBe(40);
    });

    describe.each(['node', 'python', 'bash'] as const)('runtime %s, shipped default profile', (rt) => {
      it.each(['socket', 'socketpair'] as const)('%s: AF_UNIX, AF_INET and AF_INET6 pass (if allowlisted), every other family 0-63 goes to the broker', (call) => {
        const listed = taskFor(rt).profile.seccompAllow.includes(call);
        expect(verdicts(program(rt), call)).toEqual(expected(listed ? [AF.AF_UNIX, AF.AF_INET, AF.AF_INET6] : []));
      });
    });

    it.each([
      ['AF_INET | 1 << 32', 0x1_0000_0000n | BigInt(AF.AF_INET)],
      ['AF_UNIX | 0xffffffff << 32', 0xffff_ffff_0000_0000n | BigInt(AF.AF_UNIX)],
      ['AF_VSOCK | 1 << 32', 0x1_0000_0000n | BigInt(AF.AF_VSOCK)],
      ['-1', -1],
    ])('socket(%s): a family word with high bits set goes to the broker, even when its low half is allowed', (_what, family) => {
      expect(name(runBpf(program('python'), { nr: nr('socket'), args: [family, 1, 0] }))).toBe('USER_NOTIF');
    });

    it('a profile naming AF_NETLINK and AF_VSOCK lets exactly those through, as well', () => {
      const prog = compile(taskFor('python', (t) => (t.profile.socketFamilies = [AF.AF_UNIX, AF.AF_NETLINK, AF.AF_VSOCK])));
      expect(verdicts(prog, 'socket')).toEqual(expected([AF.AF_UNIX, AF.AF_NETLINK, AF.AF_VSOCK]));
      expect(verdicts(prog, 'socketpair')).toEqual(expected([AF.AF_UNIX, AF.AF_NETLINK, AF.AF_VSOCK]));
    });

    it('a profile naming no family sends every socket and socketpair to the broker', () => {
      const prog = compile(taskFor('python', (t) => (t.profile.socketFamilies = [])));
      expect(verdicts(prog, 'socket')).toEqual(expected([]));
      expect(verdicts(prog, 'socketpair')).toEqual(expected([]));
      expect(name(runBpf(prog, { nr: nr('read') }))).toBe('ALLOW');
    });

    it('families do not allow socket to a profile whose allowlist lacks it', () => {
      const prog = compile(taskFor('python', (t) => (t.profile.seccompAllow = t.profile.seccompAllow.filter((n) => n !== 'socket'))));
      expect(verdicts(prog, 'socket')).toEqual(expected([]));
      expect(verdicts(prog, 'socketpair')).toEqual(expected([AF.AF_UNIX, AF.AF_INET, AF.AF_INET6]));
    });
  });

  describe('brokered files', () => {
    const OPENS = ['open', 'openat', 'openat2', 'creat'];
    const withBroker = (t: SandboxTask): void => {
      t.profile.brokeredFiles = [{ path: '/run/secrets/db', source: '/etc/hostname' }];
    };

    it.each(['node', 'python', 'bash'] as const)('route open, openat, openat2 and creat of %s to the broker', (rt) => {
      const prog = compile(taskFor(rt, withBroker));
      expect(OPENS.map((n) => [n, name(runBpf(prog, { nr: nr(n) }))])).toEqual(OPENS.map((n) => [n, 'USER_NOTIF']));
      // everything else of the allowlist is unchanged
      expect(name(runBpf(prog, { nr: nr('read') }))).toBe('ALLOW');
      expect(name(runBpf(prog, { nr: nr('newfstatat') }))).toBe('ALLOW');
    });

    it.each(['node', 'python', 'bash'] as const)('leave the opens of %s to the kernel when the profile brokers nothing', (rt) => {
      expect(OPENS.map((n) => [n, name(runBpf(program(rt), { nr: nr(n) }))])).toEqual(OPENS.map((n) => [n, 'ALLOW']));
    });
  });

  it('refuses an allowlist with an unknown syscall name, naming it', () => {
    const r = exportBpf(taskFor('python', (t) => t.profile.seccompAllow.push('zviz_no_such_call')));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('zviz_no_such_call');
    expect(r.prog.length).toBe(0);
  });
});

describe('the BPF interpreter of this suite', () => {
  const I = (code: number, k: number, jt = 0, jf = 0): Insn => ({ code, jt, jf, k });
  it('fails loudly on an instruction it does not know', () => {
    expect(() => runBpf([I(0x28, 0), I(0x06, 0)], { nr: 0 })).toThrow(/unsupported load/); // LD H ABS
    expect(() => runBpf([I(0x20, 64), I(0x06, 0)], { nr: 0 })).toThrow(/outside seccomp_data/);
    expect(() => runBpf([I(0x05, 5)], { nr: 0 })).toThrow(/past the end/);
    expect(() => runBpf([I(0x20, 0)], { nr: 0 })).toThrow(/without a return/);
  });

  it('reads the 64-bit arguments as two little-endian words', () => {
    const prog = [I(0x20, 16 + 8 * 1 + 4), I(0x15, 1, 0, 1), I(0x06, 111), I(0x06, 222)];
    expect(runBpf(prog, { nr: 0, args: [0, 0x1_0000_0000n] })).toBe(111);
    expect(runBpf(prog, { nr: 0, args: [0, 0x1] })).toBe(222);
  });
});
