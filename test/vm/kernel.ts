// What the VM boots: the host's distribution kernel (/boot/vmlinuz-<version>) and, for the
// tiny initramfs, the modules the guest needs to reach the host's file system (virtio PCI,
// 9p over virtio, overlayfs), each after the modules it depends on (modules.dep).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What init loads, in this order once dependencies are resolved. */
export const GUEST_MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'overlay', 'loop', 'ext4'] as const;

export interface Kernel {
  version: string;
  image: string;
  modulesDir: string;
}

/** modules.dep: `kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko` → path → dependencies. */
export function parseModulesDep(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    out.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
  }
  return out;
}

/** A module's name as modprobe spells it: file name without .ko[.xz|.zst|.gz], `-` as `_`. */
export function moduleName(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

/**
 * The module files to load for `wanted`, dependencies first, each once. A wanted module
 * missing from modules.dep is built into the kernel (or absent): the guest's mount then
 * says which.
 */
export function moduleLoadOrder(dep: Map<string, string[]>, wanted: readonly string[]): string[] {
  const byName = new Map([...dep.keys()].map((p) => [moduleName(p), p]));
  const order: string[] = [];
  const visit = (path: string, depth: number): void => {
    if (order.includes(path) || depth > 32) return;
    // modules.dep lists every transitive dependency, the deepest last: load those first.
    for (const d of [...(dep.get(path) ?? [])].reverse()) visit(d, depth + 1);
    if (!order.includes(path)) order.push(path);
  };
  for (const w of wanted) {
    const path = byName.get(w.replace(/-/g, '_'));
    if (path) visit(path, 0);
  }
  return order;
}

/** The version strings of /boot/vmlinuz-* that have their modules, newest first; `-cloud-` has no 9p. */
export function pickKernel(images: string[], hasModules: (version: string) => boolean): string | null {
  const versions = images
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => !v.includes('-cloud-') && hasModules(v));
  versions.sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
  return versions[0] ?? null;
}

/** The kernel the VM boots: ZVIZ_VM_KERNEL (a version) or the newest usable one in /boot. */
export function findKernel(env: NodeJS.ProcessEnv = process.env): Kernel | null {
  const hasModules = (v: string): boolean => existsSync(join('/lib/modules', v, 'modules.dep'));
  let version = env.ZVIZ_VM_KERNEL ?? null;
  if (!version) {
    let images: string[] = [];
    try {
      images = readdirSync('/boot');
    } catch {
      return null; // no /boot: no kernel to boot
    }
    version = pickKernel(images, hasModules);
  }
  if (!version || !existsSync(join('/boot', `vmlinuz-${version}`)) || !hasModules(version)) return null;
  return { version, image: join('/boot', `vmlinuz-${version}`), modulesDir: join('/lib/modules', version) };
}

/** Absolute paths of the module files the guest loads, in order. */
export function guestModules(k: Kernel): string[] {
  const dep = parseModulesDep(readFileSync(join(k.modulesDir, 'modules.dep'), 'utf8'));
  return moduleLoadOrder(dep, GUEST_MODULES).map((p) => join(k.modulesDir, p));
}
