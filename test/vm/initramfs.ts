// The VM's initramfs: busybox-static, the modules that reach the host's file system, and
// an init that puts the host's `/` (shared read-only over virtio-9p) under a tmpfs overlay
// and hands over to the job's own script (guest.sh) there. Built fresh per run in a temp
// directory with cpio; nothing of it outlives the run.
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/** 9p mount tags: the host's root (read-only) and the run's exchange directory (read-write). */
export const ROOT_TAG = 'hostroot';
export const XCHG_TAG = 'xchg';
/** Where the exchange directory appears in the guest. */
export const GUEST_XCHG = '/mnt/vm-xchg';

export const BUSYBOX = '/bin/busybox';

/** Stage 1, run by the kernel as /init. */
export function initScript(modules: readonly string[]): string {
  const insmods = modules.map((m) => `insmod /modules/${basename(m)} || fail "insmod ${basename(m)}"`).join('\n');
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "vm-init: $*" >&2; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
${insmods}
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=512000,ro ${ROOT_TAG} /lower || fail "mount the host root"
# The guest writes to RAM only: the host's files stay as they are.
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot || fail "mount the overlay"
mkdir -p /newroot${GUEST_XCHG}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 ${XCHG_TAG} /newroot${GUEST_XCHG} || fail "mount the exchange directory"
umount /proc /sys /dev
exec switch_root /newroot /bin/bash ${GUEST_XCHG}/guest.sh
`;
}

/**
 * Stage 2, PID 1 in the overlay: the file systems a host has, cgroup v2 with every
 * controller enabled below the root, securityfs for AppArmor, loopback only; then
 * job.sh with its output on the console, its exit status in the exchange directory.
 */
export function guestScript(): string {
  return `set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
# The host's /run and /tmp hold the host's state (its servers, its locks): not the guest's.
# A job whose working directory lies beneath them (a CI clone in /tmp, say) keeps it: it is
# put aside before the guest's own tmpfs goes on top, and moved back onto its path after.
keep=$(cat ${GUEST_XCHG}/cwd 2>/dev/null || true)
case "$keep" in
  /tmp/*|/run/*) mkdir -p /mnt/vm-keep && mount --bind "$keep" /mnt/vm-keep || keep= ;;
  *) keep= ;;
esac
mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
if [ -n "$keep" ]; then mkdir -p "$keep" && mount --move /mnt/vm-keep "$keep"; fi
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t securityfs securityfs /sys/kernel/security
# Every controller for the children of the root, as systemd does on a pure v2 host.
ctrls=$(sed 's/\\([^ ]*\\)/+\\1/g' /sys/fs/cgroup/cgroup.controllers)
echo "$ctrls" > /sys/fs/cgroup/cgroup.subtree_control
ip link set lo up
hostname zviz-vm-guest 2>/dev/null || true
rc=125
if [ -f ${GUEST_XCHG}/job.sh ]; then
  bash ${GUEST_XCHG}/job.sh </dev/null
  rc=$?
fi
echo "$rc" > ${GUEST_XCHG}/status
sync
/bin/busybox poweroff -f
`;
}

/** Writes the initramfs as an uncompressed newc cpio archive at `out`, built in `stage`. */
export function buildInitramfs(stage: string, out: string, modules: readonly string[], busybox = BUSYBOX): void {
  for (const d of ['bin', 'modules', 'proc', 'sys', 'dev']) mkdirSync(join(stage, d), { recursive: true });
  copyFileSync(busybox, join(stage, 'bin', 'busybox'));
  chmodSync(join(stage, 'bin', 'busybox'), 0o755);
  for (const m of modules) {
    if (!m.endsWith('.ko')) throw new Error(`Cannot put compressed module ${m} in the initramfs: busybox insmod loads .ko files only`);
    copyFileSync(m, join(stage, 'modules', basename(m)));
  }
  writeFileSync(join(stage, 'init'), initScript(modules), { mode: 0o755 });
  const list = spawnSync('find', ['.', '-print0'], { cwd: stage });
  const cpio = spawnSync('cpio', ['--null', '-o', '-H', 'newc', '--quiet', '-F', out], { cwd: stage, input: list.stdout });
  if (cpio.status !== 0) throw new Error(`Cannot build the initramfs with cpio: ${cpio.stderr?.toString().trim() || `exit ${cpio.status}`}`);
}
