// Which QEMU accelerator the VM uses. /dev/kvm alone proves nothing: a host can expose a
// paravirtual kvm (kvm_pvm) under which a normal distribution kernel hangs at boot. KVM is
// used only behind a plain hardware module (kvm_intel, kvm_amd); otherwise TCG, which is
// slower but boots everywhere. ZVIZ_VM_ACCEL=kvm|tcg overrides the choice.
import { accessSync, constants, existsSync } from 'node:fs';

export type Accel = 'kvm' | 'tcg';

export interface AccelFacts {
  /** /dev/kvm exists and we may open it read-write. */
  devKvm: boolean;
  /** Loaded kvm back ends: names under /sys/module starting with kvm_. */
  kvmModules: string[];
  override?: string | undefined;
}

export interface AccelChoice {
  accel: Accel;
  why: string;
}

export function chooseAccel(f: AccelFacts): AccelChoice {
  if (f.override === 'kvm' || f.override === 'tcg') return { accel: f.override, why: `ZVIZ_VM_ACCEL=${f.override}` };
  if (!f.devKvm) return { accel: 'tcg', why: 'no usable /dev/kvm' };
  const plain = f.kvmModules.filter((m) => m === 'kvm_intel' || m === 'kvm_amd');
  const other = f.kvmModules.filter((m) => m !== 'kvm_intel' && m !== 'kvm_amd');
  if (other.length > 0) return { accel: 'tcg', why: `/dev/kvm is served by ${other.join(', ')}, which cannot boot a normal kernel` };
  if (plain.length === 0) return { accel: 'tcg', why: '/dev/kvm without a kvm_intel or kvm_amd module' };
  return { accel: 'kvm', why: `/dev/kvm by ${plain.join(', ')}` };
}

export function accelFacts(env: NodeJS.ProcessEnv = process.env): AccelFacts {
  let devKvm = false;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    devKvm = true;
  } catch {
    devKvm = false; // absent or not ours to open
  }
  const kvmModules = ['kvm_intel', 'kvm_amd', 'kvm_pvm'].filter((m) => existsSync(`/sys/module/${m}`));
  return { devKvm, kvmModules, override: env.ZVIZ_VM_ACCEL };
}

/** QEMU arguments for the accelerator. */
export function accelArgs(a: Accel): string[] {
  return a === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max'];
}
