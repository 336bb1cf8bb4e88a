// zviz doctor's judgement and text, from fake host facts.
import { describe, expect, it } from 'vitest';
import { loadProfiles, type Profile } from '../../profiles/index.js';
import type { HostFacts } from '../../worker-pool/types.js';
import { EXPECTED_ABI } from '../../worker-pool/native.js';
import { loadConfig } from '../config.js';
import { doctorReport, formatDoctor, type Circumstances } from './doctor.js';

const profiles = [...loadProfiles(loadConfig({}).profilesDir).values()];

function facts(over: Partial<HostFacts> = {}): HostFacts {
  return {
    kernel: '6.1.0-test',
    arch: 'x86_64',
    userNamespaces: { available: true, maxUserNamespaces: 63000, detail: 'user.max_user_namespaces = 63000' },
    cgroup: {
      driver: 'v2',
      controllers: ['memory', 'pids', 'cpu'],
      parents: { unified: '/sys/fs/cgroup/system.slice/zviz.service/zviz' },
      detail: 'cgroup v2 at /sys/fs/cgroup, server cgroup /system.slice/zviz.service, controllers memory pids cpu',
    },
    landlock: { abi: 7, unenforced: [], detail: 'Landlock ABI 7' },
    seccomp: { available: true, actions: ['kill_process', 'errno', 'user_notif', 'allow'], userNotification: true, detail: 'actions: kill_process errno user_notif allow' },
    nftables: { available: true, detail: 'nft at /usr/sbin/nft' },
    lsm: { list: ['lockdown', 'capability', 'landlock', 'apparmor'], apparmor: true, selinux: false },
    syscallAbis: { ia32: true, x32: false, detail: 'IA32 (int 0x80) present, x32 absent' },
    nativeAbi: EXPECTED_ABI,
    ...over,
  };
}

function circumstances(over: Partial<Circumstances> = {}): Circumstances {
  return {
    root: true,
    probeError: null,
    profiles,
    missing: [],
    supervisor: { path: '/opt/zviz/native/build/zviz-supervisor', present: true },
    ip: '/usr/sbin/ip',
    redisServer: { name: 'redis-server', path: '/usr/bin/redis-server' },
    ...over,
  };
}

const statusOf = (r: ReturnType<typeof doctorReport>, name: string) => r.checks.find((c) => c.name === name)?.status;

describe('zviz doctor', () => {
  it('a fit host: every check ok, exit-worthy ok, and every fact GET /host shows is in the report', () => {
    const r = doctorReport(facts(), circumstances());
    expect(r.ok).toBe(true);
    expect(r.checks.every((c) => c.status === 'ok')).toBe(true);
    expect(r.checks.map((c) => c.name)).toEqual([
      'privileges',
      'kernel',
      'user namespaces',
      'cgroups',
      'landlock',
      'seccomp',
      'nftables',
      'iproute2',
      'syscall ABIs',
      'lsm',
      'native',
      'profiles',
      'redis',
    ]);
    expect(r.facts).toEqual(facts());
    const text = formatDoctor(r);
    expect(text.split('\n')[0]).toBe('This host can run the profiles.');
    expect(text).toContain('  ok    kernel           6.1.0-test (x86_64)');
    expect(text).toContain('unified → /sys/fs/cgroup/system.slice/zviz.service/zviz');
    expect(text).toContain('lockdown, capability, landlock, apparmor; AppArmor enabled, SELinux off');
    expect(text).toContain('IA32 (int 0x80) present, x32 absent');
    expect(text).not.toContain('fix:');
  });

  it('missing requirements fail the host and are listed as they are, each saying how to fix it', () => {
    const missing = ['Host lacks user namespaces (layer A): enable them with `sysctl -w user.max_user_namespaces=65536`'];
    const r = doctorReport(
      facts({ userNamespaces: { available: false, maxUserNamespaces: 0, detail: 'user namespaces are disabled' } }),
      circumstances({ missing }),
    );
    expect(r.ok).toBe(false);
    expect(statusOf(r, 'user namespaces')).toBe('fail');
    expect(r.missing).toEqual(missing);
    const text = formatDoctor(r);
    expect(text.split('\n')[0]).toBe('This host cannot run the profiles yet.');
    expect(text).toContain('  fail  user namespaces  user namespaces are disabled');
    expect(text).toContain(`To fix before zviz serve or zviz run will start:\n  - ${missing[0]}`);
  });

  it('no nft is a warning with the package to install, and a failure when a profile gives egress', () => {
    const noNft = facts({ nftables: { available: false, detail: 'nft not installed (apt-get install nftables)' } });
    const quiet = doctorReport(noNft, circumstances({ ip: null }));
    expect(quiet.ok).toBe(true);
    expect(quiet.checks.find((c) => c.name === 'nftables')).toMatchObject({ status: 'warn', fix: 'apt-get install nftables' });
    expect(quiet.checks.find((c) => c.name === 'iproute2')).toMatchObject({ status: 'warn', fix: 'apt-get install iproute2' });
    expect(formatDoctor(quiet)).toContain('fix: apt-get install nftables');

    const egress: Profile = { ...profiles[0]!, name: 'web', network: { mode: 'egress', allow: [], limits: {} } };
    const loud = doctorReport(noNft, circumstances({ profiles: [...profiles, egress] }));
    expect(loud.ok).toBe(false);
    expect(loud.checks.find((c) => c.name === 'nftables')).toMatchObject({ status: 'fail', detail: 'nft not installed: profiles web give egress and need it' });
  });

  it('Landlock rights the kernel cannot enforce are a warning naming them', () => {
    const r = doctorReport(
      facts({ landlock: { abi: 3, unenforced: ['net.bind_tcp', 'net.connect_tcp'], detail: 'Landlock ABI 3' } }),
      circumstances(),
    );
    expect(r.ok).toBe(true);
    expect(r.checks.find((c) => c.name === 'landlock')).toMatchObject({
      status: 'warn',
      detail: 'Landlock ABI 3: cannot enforce net.bind_tcp, net.connect_tcp',
    });
  });

  it('seccomp without user notification fails: the broker needs it', () => {
    const r = doctorReport(facts({ seccomp: { available: true, actions: ['errno', 'allow'], userNotification: false, detail: 'actions: errno allow' } }), circumstances());
    expect(r.ok).toBe(false);
    expect(r.checks.find((c) => c.name === 'seccomp')).toMatchObject({ status: 'fail', detail: 'actions: errno allow (no user notification)' });
  });

  it('cgroup v1 is fine; no cgroups fail; a missing cpu controller warns', () => {
    const v1 = doctorReport(
      facts({ cgroup: { driver: 'v1', controllers: ['memory', 'pids', 'freezer'], parents: { memory: '/sys/fs/cgroup/memory/zviz' }, detail: 'cgroup v1' } }),
      circumstances(),
    );
    expect(statusOf(v1, 'cgroups')).toBe('ok');
    expect(statusOf(v1, 'cpu controller')).toBe('warn');
    const none = doctorReport(facts({ cgroup: { driver: 'none', controllers: [], parents: {}, detail: 'no cgroup hierarchy' } }), circumstances());
    expect(statusOf(none, 'cgroups')).toBe('fail');
    expect(none.ok).toBe(false);
  });

  it('not root, a broken profile, no native build: each fails with what to do', () => {
    const r = doctorReport(null, circumstances({ root: false, probeError: 'Cannot load libzviz.so', profiles: { error: 'Invalid profile x.json: field …' } }));
    expect(r.ok).toBe(false);
    expect(r.facts).toBeNull();
    expect(r.checks.filter((c) => c.status === 'fail').map((c) => c.name)).toEqual(['privileges', 'native', 'profiles']);
    expect(r.checks.find((c) => c.name === 'native')?.fix).toContain('npm run build:native');
  });

  it('a missing redis-server only warns: zviz run needs none', () => {
    const r = doctorReport(facts(), circumstances({ redisServer: { name: 'redis-server', path: null } }));
    expect(r.ok).toBe(true);
    expect(r.checks.find((c) => c.name === 'redis')).toMatchObject({ status: 'warn', fix: 'apt-get install redis-server' });
    expect(doctorReport(facts(), circumstances({ redisServer: null })).checks.find((c) => c.name === 'redis')?.detail).toBe('external Redis (ZVIZ_REDIS_URL)');
  });

  it('warns when the image store is over ZVIZ_IMAGE_CACHE_MB (pinned images are never collected), and says how to fix it', () => {
    const MiB = 1024 * 1024;
    const within = doctorReport(facts(), circumstances({ imageStore: { images: 2, bytes: 3 * MiB, budgetBytes: 10 * MiB } }));
    expect(within.checks.find((c) => c.name === 'image store')).toMatchObject({ status: 'ok', detail: '2 images, 3 MiB of 10 MiB (ZVIZ_IMAGE_CACHE_MB)' });
    const over = doctorReport(facts(), circumstances({ imageStore: { images: 3, bytes: 30 * MiB, budgetBytes: 10 * MiB } }));
    const check = over.checks.find((c) => c.name === 'image store')!;
    expect(check.status).toBe('warn');
    expect(check.detail).toContain('never removes an image a deployed function pins');
    expect(check.fix).toContain('raise ZVIZ_IMAGE_CACHE_MB');
    expect(over.ok).toBe(true); // a warning, not a reason to refuse to start
  });

  it('the JSON report round-trips', () => {
    const r = doctorReport(facts(), circumstances());
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });
});
