// The VM harness without booting anything: module order, kernel choice, accelerator
// choice, the scripts it writes, its arguments, and the job's verdict on a report.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chooseAccel } from './accel.js';
import { GUEST_XCHG, initScript, guestScript } from './initramfs.js';
import { moduleLoadOrder, moduleName, parseModulesDep, pickKernel } from './kernel.js';
import { judge } from './report.js';
import { parseRunArgs } from './run.js';
import { jobScript, KERNEL_ARGS, shellQuote } from './vm.js';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';

const DEP = `kernel/fs/overlayfs/overlay.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/net/9p/9pnet.ko:
`;

describe('kernel and modules', () => {
  it('loads every module after the modules it depends on, each once (Debian 6.1 modules.dep)', () => {
    const order = moduleLoadOrder(parseModulesDep(DEP), ['virtio_pci', '9pnet_virtio', '9p', 'overlay']).map(moduleName);
    expect(new Set(order).size).toBe(order.length);
    expect(order).toHaveLength(11);
    const dep = parseModulesDep(DEP);
    for (const [path, deps] of dep) {
      const at = order.indexOf(moduleName(path));
      for (const d of deps) expect(order.indexOf(moduleName(d)), `${d} before ${path}`).toBeLessThan(at);
    }
    expect(order.at(-1)).toBe('overlay');
  });

  it('names modules as modprobe does, compressed or not', () => {
    expect(moduleName('kernel/net/9p/9pnet_virtio.ko')).toBe('9pnet_virtio');
    expect(moduleName('kernel/fs/x/some-mod.ko.xz')).toBe('some_mod');
  });

  it('picks the newest kernel with modules, never the cloud flavour (it has no 9p)', () => {
    const images = ['vmlinuz-6.1.0-9-amd64', 'vmlinuz-6.1.0-57-amd64', 'vmlinuz-6.1.0-60-cloud-amd64', 'config-6.1.0-57-amd64', 'vmlinuz-6.1.0-58-amd64'];
    expect(pickKernel(images, (v) => v !== '6.1.0-58-amd64')).toBe('6.1.0-57-amd64');
    expect(pickKernel(['vmlinuz-6.1.0-60-cloud-amd64'], () => true)).toBeNull();
  });
});

describe('accelerator', () => {
  it('uses KVM only behind kvm_intel or kvm_amd; a paravirtual kvm, or none, gets TCG; the override wins', () => {
    expect(chooseAccel({ devKvm: true, kvmModules: ['kvm_intel'] }).accel).toBe('kvm');
    expect(chooseAccel({ devKvm: true, kvmModules: ['kvm_amd'] }).accel).toBe('kvm');
    expect(chooseAccel({ devKvm: true, kvmModules: ['kvm_pvm'] })).toEqual({
      accel: 'tcg',
      why: '/dev/kvm is served by kvm_pvm, which cannot boot a normal kernel',
    });
    expect(chooseAccel({ devKvm: true, kvmModules: ['kvm_intel', 'kvm_pvm'] }).accel).toBe('tcg');
    expect(chooseAccel({ devKvm: true, kvmModules: [] }).accel).toBe('tcg');
    expect(chooseAccel({ devKvm: false, kvmModules: ['kvm_intel'] }).accel).toBe('tcg');
    expect(chooseAccel({ devKvm: false, kvmModules: [], override: 'kvm' }).accel).toBe('kvm');
    expect(chooseAccel({ devKvm: true, kvmModules: ['kvm_intel'], override: 'tcg' }).accel).toBe('tcg');
  });
});

describe('scripts', () => {
  it('the kernel command line is pure cgroup v2 with AppArmor, and a panic powers the VM off', () => {
    expect(KERNEL_ARGS).toEqual(expect.arrayContaining(['cgroup_no_v1=all', 'apparmor=1', 'security=apparmor', 'panic=-1']));
    expect(KERNEL_ARGS.find((a) => a.startsWith('lsm='))).toContain('apparmor');
  });

  it('init loads the modules in order, mounts the host root read-only under an overlay and hands over', () => {
    const init = initScript(['/lib/modules/v/kernel/a.ko', '/lib/modules/v/kernel/b.ko']);
    expect(init.indexOf('insmod /modules/a.ko')).toBeLessThan(init.indexOf('insmod /modules/b.ko'));
    expect(init).toMatch(/cache=loose,msize=\d+,ro hostroot \/lower/);
    expect(init).toContain(`exec switch_root /newroot /bin/bash ${GUEST_XCHG}/guest.sh`);
    const guest = guestScript();
    for (const m of ['cgroup2 cgroup2 /sys/fs/cgroup', 'securityfs securityfs /sys/kernel/security', 'tmpfs -o mode=0755 run /run']) {
      expect(guest).toContain(`mount -t ${m}`);
    }
    expect(guest).toContain(`echo "$rc" > ${GUEST_XCHG}/status`);
    // A working directory beneath /tmp (a CI clone) is put aside before the guest's tmpfs, and back after it.
    const tmpfs = guest.indexOf('mount -t tmpfs -o mode=1777 tmp /tmp');
    expect(guest.indexOf('mount --bind "$keep" /mnt/vm-keep')).toBeLessThan(tmpfs);
    expect(guest.indexOf('mount --move /mnt/vm-keep "$keep"')).toBeGreaterThan(tmpfs);
  });

  it('both scripts are valid shell', () => {
    for (const text of [initScript(['/m/a.ko']), guestScript(), jobScript({ script: 'true', cwd: '/x y', env: { A: "it's" } })]) {
      expect(spawnSync('bash', ['-n'], { input: text }).status).toBe(0);
    }
  });

  it('job.sh is valid shell; ZVIZ_VM_SUITES=all names every layer suite there is and the CI jobs, and the default the same files', () => {
    const path = join(PACKAGE_ROOT, 'test', 'vm', 'job.sh');
    expect(spawnSync('bash', ['-n', path]).status).toBe(0);
    const text = readFileSync(path, 'utf8');
    const all = /^\s*all\) SUITES="([^"]*)"/m.exec(text)?.[1]?.split(' ');
    const layers = readdirSync(join(PACKAGE_ROOT, 'test')).filter((f) => /^layer-[a-z]\.test\.ts$/.test(f)).map((f) => `test/${f}`);
    expect(all).toEqual([...layers.sort(), 'test/jobs.test.ts']);
    expect(/^\s*SUITES="([^"]*)"/m.exec(text)?.[1]?.split(' ')).toEqual(all);
  });

  it('the job script quotes its environment and directory, and refuses a bad variable name', () => {
    const text = jobScript({ script: 'echo "$A"', cwd: "/a b/c'd", env: { A: "x'; rm -rf /; '" } });
    const r = spawnSync('bash', ['-c', text.replace(/^cd .*$/m, '')], { encoding: 'utf8' });
    expect(r.stdout).toBe("x'; rm -rf /; '\n");
    expect(text).toContain(`cd ${shellQuote("/a b/c'd")} || exit 125`);
    expect(() => jobScript({ script: '', cwd: '/', env: { 'A;B': '1' } })).toThrow(/not a valid name/);
  });

  it('run.js takes a command after -- or a script with --file, and a positive timeout', () => {
    expect(parseRunArgs(['--', 'echo', "it's"])).toEqual({ timeoutS: 1800, script: `'echo' 'it'\\''s'` });
    expect(parseRunArgs(['--timeout', '60', '--file', 'test/vm/job.sh'])).toEqual({ timeoutS: 60, script: `source 'test/vm/job.sh'` });
    expect(parseRunArgs(['--timeout', '0', '--', 'true'])).toMatch(/--timeout must be a positive number/);
    expect(parseRunArgs(['--'])).toMatch(/a command is required/);
    expect(parseRunArgs(['--bogus'])).toMatch(/unknown argument '--bogus'/);
  });
});

describe('the job verdict on a vitest report', () => {
  const report = (tests: Array<[string, string]>) => ({
    testResults: [{ name: 'f.test.ts', status: 'passed', assertionResults: tests.map(([fullName, status]) => ({ fullName, status })) }],
  });

  it('any skip fails the job; what was left out is listed once, and fails it unless left out by design', () => {
    const v = judge(
      report([
        ['a passes', 'passed'],
        ['layer D on cgroup v2 the server reports the v2 driver', 'skipped'],
        ['b fails', 'failed'],
      ]),
      [
        "layer D on cgroup v1 [this host's cgroup driver is v2, not v1]",
        'layer C: Landlock, seen from inside real sandboxes > scopes [needs Landlock ABI ≥ 6: this kernel has 2]',
        'layer C: Landlock, seen from inside real sandboxes > scopes [needs Landlock ABI ≥ 6: this kernel has 2]',
        'layer C: AppArmor confines functions [needs AppArmor with profiles/apparmor/zviz-function loaded: not here]',
        '',
      ],
    );
    expect(v).toMatchObject({ passed: 1, failed: 1, skipped: 1 });
    expect(v.leftOut).toHaveLength(3);
    expect(v.problems).toEqual([
      'skipped (a skip in the VM is a failure): layer D on cgroup v2 the server reports the v2 driver',
      'failed: b fails',
      'left out, but it should apply in the VM: layer C: AppArmor confines functions [needs AppArmor with profiles/apparmor/zviz-function loaded: not here]',
    ]);
  });

  it("tests the job's name filter did not select are counted apart; a selected one skipped still fails", () => {
    const v = judge(
      report([
        ['layer A x', 'passed'],
        ['layer E: networking slow case', 'skipped'],
        ['layer E: networking mode none y', 'skipped'],
      ]),
      [],
      /^(?!layer E: )|^layer E: networking mode none /,
    );
    expect(v).toMatchObject({ passed: 1, skipped: 1, notSelected: 1 });
    expect(v.problems).toEqual(['skipped (a skip in the VM is a failure): layer E: networking mode none y']);
  });

  it('a file that fails before any test (a beforeAll, an import) fails the job', () => {
    const v = judge({ testResults: [{ name: 'x.test.ts', status: 'failed', message: 'boom\nstack', assertionResults: [] }] });
    expect(v.problems).toEqual(['file failed before any test: x.test.ts: boom']);
  });
});
