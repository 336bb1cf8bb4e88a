// Runs a shell command in a throw-away QEMU VM on a pure cgroup v2 + AppArmor kernel: the
// host's own `/` (read-only, under a tmpfs overlay) as its root, so the guest sees this
// checkout, node, python3 and the rest exactly as the host has them; no network card. The
// command's output streams out over the serial console, its exit status comes back in a
// temporary exchange directory (shared read-write over 9p). Whatever happens — the job
// fails, the timeout fires, the caller is interrupted — qemu is killed and the temporary
// directory removed; nothing is ever mounted on the host.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accelArgs, accelFacts, chooseAccel, type AccelChoice } from './accel.js';
import { buildInitramfs, guestScript, GUEST_XCHG, ROOT_TAG, XCHG_TAG } from './initramfs.js';
import { findKernel, guestModules, type Kernel } from './kernel.js';

/** The kernel command line: cgroup v2 only, AppArmor on, and a panic ends the VM. */
export const KERNEL_ARGS = [
  'console=ttyS0',
  'quiet',
  'loglevel=3',
  'cgroup_no_v1=all',
  'lsm=landlock,lockdown,yama,apparmor,bpf',
  'apparmor=1',
  'security=apparmor',
  'panic=-1',
  'rdinit=/init',
];

export const QEMU = 'qemu-system-x86_64';

export interface VmOptions {
  /** Bash source run in the guest as root, from `cwd`. */
  script: string;
  cwd: string;
  env?: Record<string, string>;
  timeoutMs: number;
  memoryMb?: number;
  cpus?: number;
  /** Each chunk of console output as it arrives (besides the returned copy). */
  onOutput?: (chunk: string) => void;
}

export interface VmResult {
  /** The job's exit status; null when the VM ended without one (timeout, boot failure). */
  status: number | null;
  timedOut: boolean;
  output: string;
  accel: AccelChoice;
  kernel: string;
  wallMs: number;
}

/** Why a VM cannot run here, or null when it can. */
export function vmUnavailable(): string | null {
  if (spawnSync(QEMU, ['--version'], { stdio: 'ignore' }).status !== 0) return `${QEMU} not installed (apt-get install qemu-system-x86)`;
  if (!existsSync('/bin/busybox')) return 'busybox-static not installed';
  if (spawnSync('cpio', ['--version'], { stdio: 'ignore' }).status !== 0) return 'cpio not installed';
  if (!findKernel()) return 'no kernel with modules in /boot (apt-get install linux-image-amd64)';
  return null;
}

/** Single-quoted for bash. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** job.sh: the environment, the working directory, the script. */
export function jobScript(o: Pick<VmOptions, 'script' | 'cwd' | 'env'>): string {
  const env = Object.entries(o.env ?? {}).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`Cannot pass variable '${k}' to the VM: not a valid name`);
    return `export ${k}=${shellQuote(v)}`;
  });
  return ['set -u', ...env, `cd ${shellQuote(o.cwd)} || exit 125`, o.script, ''].join('\n');
}

export function qemuArgs(k: Kernel, initrd: string, xchg: string, accel: AccelChoice, memoryMb: number, cpus: number): string[] {
  return [
    ...accelArgs(accel.accel),
    '-machine', 'q35',
    '-m', String(memoryMb),
    '-smp', String(cpus),
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-serial', 'stdio',
    '-monitor', 'none',
    '-no-reboot',
    '-nic', 'none',
    '-kernel', k.image,
    '-initrd', initrd,
    '-append', KERNEL_ARGS.join(' '),
    '-fsdev', `local,id=root,path=/,security_model=passthrough,readonly=on,multidevs=remap`,
    '-device', `virtio-9p-pci,fsdev=root,mount_tag=${ROOT_TAG}`,
    '-fsdev', `local,id=xchg,path=${xchg},security_model=passthrough`,
    '-device', `virtio-9p-pci,fsdev=xchg,mount_tag=${XCHG_TAG}`,
  ];
}

export async function runInVm(o: VmOptions): Promise<VmResult> {
  const kernel = findKernel();
  if (!kernel) throw new Error('Cannot run the VM: no kernel with modules in /boot (apt-get install linux-image-amd64)');
  const accel = chooseAccel(accelFacts());
  const started = Date.now();
  const tmp = mkdtempSync(join(tmpdir(), 'vm-run-'));
  let output = '';
  try {
    const xchg = join(tmp, 'xchg');
    const initrd = join(tmp, 'initrd.cpio');
    buildInitramfs(join(tmp, 'initramfs'), initrd, guestModules(kernel));
    spawnSync('mkdir', ['-m', '0700', xchg]);
    writeFileSync(join(xchg, 'guest.sh'), guestScript());
    writeFileSync(join(xchg, 'job.sh'), jobScript(o));
    // guest.sh keeps the working directory visible if it lies beneath the guest's own /tmp or /run.
    writeFileSync(join(xchg, 'cwd'), o.cwd);
    const args = qemuArgs(kernel, initrd, xchg, accel, o.memoryMb ?? 3072, o.cpus ?? 2);
    const qemu = spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer): void => {
      const text = d.toString();
      output += text;
      o.onOutput?.(text);
    };
    qemu.stdout.on('data', onData);
    qemu.stderr.on('data', onData);
    let timedOut = false;
    const kill = (): void => {
      if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, o.timeoutMs);
    // An interrupted caller still takes its VM down.
    const onSignal = (): void => kill();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      await new Promise<void>((res, rej) => {
        qemu.once('error', rej);
        qemu.once('close', () => res());
      });
    } finally {
      clearTimeout(timer);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      kill();
    }
    let status: number | null = null;
    try {
      const text = readFileSync(join(xchg, 'status'), 'utf8').trim();
      status = /^\d+$/.test(text) ? Number(text) : null;
    } catch {
      status = null; // the job never finished: no status file
    }
    return { status: timedOut ? null : status, timedOut, output, accel, kernel: kernel.version, wallMs: Date.now() - started };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
