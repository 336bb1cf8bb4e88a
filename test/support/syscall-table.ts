// The seccomp policy of layer B as data the suites share (test/layer-b.test.ts runs it in
// real sandboxes, worker-pool/seccomp-policy.test.ts runs the compiled BPF on synthetic
// input), and the x86_64 syscall numbers, read from the kernel's uapi header rather than
// typed in. Pure: no root, no server.
import { existsSync, readFileSync } from 'node:fs';

export const UNISTD_64 = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h';

/** `__NR_<name> <nr>` from the uapi header (name → number). */
export function x86_64Syscalls(text: string = readFileSync(UNISTD_64, 'utf8')): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^#define __NR_([a-z0-9_]+)\s+(\d+)\s*$/gm)) out.set(m[1]!, Number(m[2]));
  if (out.size < 300) throw new Error(`${UNISTD_64} lists only ${out.size} syscalls: not the x86_64 uapi header?`);
  return out;
}

export function syscallTableUnavailable(): string | null {
  if (process.arch !== 'x64') return `the policy tables are written for x86_64, this is ${process.arch}`;
  if (!existsSync(UNISTD_64)) return `${UNISTD_64} missing: apt-get install linux-libc-dev`;
  return null;
}

/**
 * Denied whatever a profile lists (issue #4, plus the extra kernel attack surface that
 * native/src/seccomp.c adds). clone3 is on the list too but answers ENOSYS, not EPERM, so
 * that glibc falls back to clone: it is tested on its own.
 */
export const ALWAYS_DENIED = [
  'ptrace',
  'process_vm_readv',
  'process_vm_writev',
  'kexec_load',
  'kexec_file_load',
  'init_module',
  'finit_module',
  'delete_module',
  'bpf',
  'perf_event_open',
  'userfaultfd',
  'keyctl',
  'add_key',
  'request_key',
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
  'mount',
  'umount2',
  'pivot_root',
  'chroot',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'open_tree',
  'move_mount',
  'mount_setattr',
  'unshare',
  'setns',
  'acct',
  'swapon',
  'swapoff',
  'reboot',
  'syslog',
  'quotactl',
  'quotactl_fd',
  'name_to_handle_at',
  'open_by_handle_at',
  'lookup_dcookie',
  'uselib',
  'vhangup',
  'iopl',
  'ioperm',
  'settimeofday',
  'clock_settime',
  'clock_adjtime',
  'adjtimex',
  'pidfd_getfd',
] as const;

/** What every filter allows, whatever the profile: the function process needs them between loading the filter and execve. */
export const ALWAYS_ALLOWED = ['execve', 'exit_group', 'exit', 'close', 'sendmsg', 'write', 'rt_sigreturn'] as const;

export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const AUDIT_ARCH_I386 = 0x40000003;
export const X32_SYSCALL_BIT = 0x40000000;
export const CLONE_NEWUSER = 0x10000000;
export const TIOCSTI = 0x5412;
export const TIOCLINUX = 0x541c;
export const FIONREAD = 0x541b;
export const TCGETS = 0x5401;
/** personality(2) flags (include/uapi/linux/personality.h). */
export const ADDR_NO_RANDOMIZE = 0x0040000;
export const READ_IMPLIES_EXEC = 0x0400000;
