// What this machine is, detected once, for tests whose expectation depends on it (IA32
// syscalls, the cgroup driver, the Landlock ABI, the LSMs, /dev/kvm). Machines that run the
// suite differ; a test reads the fact here, expects what holds for it, and names the
// condition in its title. Never a guess from a kernel version.
import { accessSync, constants, readFileSync } from 'node:fs';
import { probe } from '../../worker-pool/native.js';
import { planCgroups } from '../../worker-pool/host/cgroups.js';

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return ''; // absent here: the fact reads as none
  }
}

interface KernelFacts {
  landlockAbi: number;
  syscallAbis: { ia32: boolean | null; x32: boolean | null };
}

let kernel: KernelFacts | null | undefined;
/** The native probe's answer; null when the native library is not built. */
function kernelFacts(): KernelFacts | null {
  if (kernel === undefined) {
    try {
      kernel = probe() as unknown as KernelFacts;
    } catch {
      kernel = null; // no native build: privileged suites skip for that reason already
    }
  }
  return kernel;
}

/** Whether `int 0x80` reaches the kernel's i386 syscall table (null: unknown). */
export function hasIa32(): boolean | null {
  return kernelFacts()?.syscallAbis.ia32 ?? null;
}

/** Whether x32 system calls exist (null: unknown). */
export function hasX32(): boolean | null {
  return kernelFacts()?.syscallAbis.x32 ?? null;
}

/** The kernel's Landlock ABI (0: none). */
export function landlockAbi(): number {
  return kernelFacts()?.landlockAbi ?? 0;
}

/** The cgroup driver ZViz picks here, from the same plan the server makes. */
export function cgroupDriver(): 'v1' | 'v2' | 'none' {
  return planCgroups(read('/proc/self/cgroup'), read('/proc/self/mountinfo')).driver;
}

/** The active LSMs, as the kernel lists them. */
export function lsms(): string[] {
  return read('/sys/kernel/security/lsm').trim().split(',').filter(Boolean);
}

export function hasAppArmor(): boolean {
  return lsms().includes('apparmor') || read('/sys/module/apparmor/parameters/enabled').trim() === 'Y';
}

export function hasSelinux(): boolean {
  return lsms().includes('selinux') || read('/sys/fs/selinux/enforce') !== '';
}

/** Whether /dev/kvm exists and opens for reading and writing (it says nothing of what it can boot). */
export function hasKvm(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
