// Layer C policy as data (worker-pool/landlock.ts): which path of the sandbox's view gets
// which Landlock rights, which TCP ports, which rights a kernel cannot enforce, and the
// start-up refusal of a profile that needs a newer kernel. No root, no kernel.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseProfile, type Profile } from '../profiles/index.js';
import { missingRequirements, parseAppArmorProfiles } from './host/probe.js';
import { FS, landlockPolicy, landlockRefusal, NET, unenforcedRights, type PathRule } from './landlock.js';
import type { HostFacts } from './types.js';

const PROFILES_DIR = fileURLToPath(new URL('../profiles/', import.meta.url));

function profile(name: string, edit: (raw: any) => void = () => {}): Profile {
  const file = `${PROFILES_DIR}default.json`;
  const raw = JSON.parse(readFileSync(file, 'utf8'));
  raw.name = name;
  edit(raw);
  // parseProfile resolves seccomp/default.json next to the file it is given
  return parseProfile(`${PROFILES_DIR}${name}.json`, JSON.stringify(raw));
}

const READ = FS.read_file | FS.read_dir;
const READ_EXEC = READ | FS.execute;
const READ_WRITE =
  READ | FS.write_file | FS.remove_dir | FS.remove_file | FS.make_dir | FS.make_reg | FS.make_sock | FS.make_fifo | FS.make_sym | FS.refer | FS.truncate;
const NEVER_GRANTED = FS.make_char | FS.make_block | FS.ioctl_dev;
const ETC_FILES = ['passwd', 'group', 'hosts', 'nsswitch.conf', 'hostname', 'resolv.conf', 'ld.so.cache', 'services', 'protocols'];

/** Names of the set bits, so a failing comparison reads as rights, not numbers. */
function rights(access: bigint): string[] {
  return Object.entries(FS)
    .filter(([, bit]) => (access & bit) !== 0n)
    .map(([n]) => n);
}
const shown = (rules: PathRule[]) => rules.map((r) => ({ path: r.path, rights: rights(r.access), optional: r.optional }));

describe('landlockPolicy', () => {
  const base = landlockPolicy(profile('default'));

  // [path, rights, optional] — the documented rules for the default profile, in order.
  const DEFAULT_RULES: Array<[string, bigint, boolean]> = [
    ['/usr', READ_EXEC, false],
    ['/fn', READ, false],
    ['/proc', READ, false],
    ['/dev', READ | FS.write_file | FS.truncate, false],
    ['/dev/shm', READ_WRITE, false],
    ['/tmp', READ_WRITE, false],
    ['/etc', FS.read_dir, false],
    ...ETC_FILES.map((f): [string, bigint, boolean] => [`/etc/${f}`, FS.read_file, true]),
    ['/etc/ssl/certs', READ, true],
    ['/etc/alternatives', READ_EXEC, true],
  ];

  it('grants exactly the documented rules to the default profile, nothing else', () => {
    expect(shown(base.paths)).toEqual(shown(DEFAULT_RULES.map(([path, access, optional]) => ({ path, access, optional }))));
  });

  it.each(DEFAULT_RULES)('grants %s exactly its rights', (path, access) => {
    const rule = base.paths.filter((r) => r.path === path);
    expect(rule).toHaveLength(1);
    expect(rights(rule[0]!.access)).toEqual(rights(access));
  });

  it('never grants device creation or device ioctls, anywhere', () => {
    const p = landlockPolicy(profile('wide', (raw) => {
      raw.filesystem.tmpExec = true;
      raw.landlock.readOnly = ['/data'];
      raw.landlock.readWrite = ['/work'];
    }));
    for (const r of p.paths) expect(rights(r.access & NEVER_GRANTED), r.path).toEqual([]);
  });

  it('grants execute nowhere a function can write', () => {
    for (const r of base.paths) {
      if (r.access & FS.write_file) expect(rights(r.access & FS.execute), r.path).toEqual([]);
    }
  });

  it('reads of /etc are per file: the directory itself is only listable', () => {
    const etc = base.paths.find((r) => r.path === '/etc')!;
    expect(rights(etc.access)).toEqual(['read_dir']);
    for (const f of ETC_FILES) expect(rights(base.paths.find((r) => r.path === `/etc/${f}`)!.access)).toEqual(['read_file']);
    expect(base.paths.some((r) => r.path === '/etc/shadow')).toBe(false);
  });

  it('adds execute to /tmp, and only to /tmp, when the profile sets tmpExec', () => {
    const p = landlockPolicy(profile('tmp-exec', (raw) => (raw.filesystem.tmpExec = true)));
    expect(rights(p.paths.find((r) => r.path === '/tmp')!.access)).toEqual(rights(READ_WRITE | FS.execute));
    expect(rights(p.paths.find((r) => r.path === '/dev/shm')!.access)).toEqual(rights(READ_WRITE));
    const others = (q: typeof p) => shown(q.paths.filter((r) => r.path !== '/tmp'));
    expect(others(p)).toEqual(others(base));
  });

  it("appends the profile's readOnly (read) and readWrite (read-write) paths after the built-in rules", () => {
    const p = landlockPolicy(profile('extra', (raw) => {
      raw.landlock.readOnly = ['/data', '/models'];
      raw.landlock.readWrite = ['/work'];
    }));
    expect(shown(p.paths.slice(0, base.paths.length))).toEqual(shown(base.paths));
    expect(shown(p.paths.slice(base.paths.length))).toEqual(
      shown([
        { path: '/data', access: READ, optional: false },
        { path: '/models', access: READ, optional: false },
        { path: '/work', access: READ_WRITE, optional: false },
      ]),
    );
  });

  it('grants no TCP port by default', () => {
    expect(base.ports).toEqual([]);
  });

  it('merges tcpBind and tcpConnect into one rule per port', () => {
    const p = landlockPolicy(profile('ports', (raw) => {
      raw.landlock.tcpBind = [8080, 9000];
      raw.landlock.tcpConnect = [8080, 443];
    }));
    const byPort = Object.fromEntries(p.ports.map((x) => [x.port, x.access]));
    expect(byPort).toEqual({ 8080: NET.bind_tcp | NET.connect_tcp, 9000: NET.bind_tcp, 443: NET.connect_tcp });
    expect(p.ports).toHaveLength(3);
  });

  it('carries minAbi and bestEffort from the profile and is always enabled', () => {
    expect(base).toMatchObject({ enabled: true, minAbi: 3, bestEffort: true });
    const strict = landlockPolicy(profile('strict', (raw) => (raw.landlock = { ...raw.landlock, minAbi: 7, bestEffort: false })));
    expect(strict).toMatchObject({ enabled: true, minAbi: 7, bestEffort: false });
  });
});

describe('unenforcedRights', () => {
  const ALL = ['fs.refer', 'fs.truncate', 'net.bind_tcp', 'net.connect_tcp', 'fs.ioctl_dev', 'scope.abstract_unix_socket', 'scope.signal'];
  const CASES: Array<[number, string[]]> = [
    [0, ['fs.all', ...ALL]],
    [1, ALL],
    [2, ALL.filter((r) => r !== 'fs.refer')],
    [3, ['net.bind_tcp', 'net.connect_tcp', 'fs.ioctl_dev', 'scope.abstract_unix_socket', 'scope.signal']],
    [4, ['fs.ioctl_dev', 'scope.abstract_unix_socket', 'scope.signal']],
    [5, ['scope.abstract_unix_socket', 'scope.signal']],
    [6, []],
    [7, []],
  ];
  it.each(CASES)('ABI %i leaves %j unenforced', (abi, expected) => {
    expect([...unenforcedRights(abi)].sort()).toEqual([...expected].sort());
  });
});

describe('landlockRefusal and the start-up check', () => {
  const needs7 = profile('needs-seven', (raw) => (raw.landlock = { ...raw.landlock, minAbi: 7, bestEffort: false }));

  it('names the profile, both ABIs and the two ways to fix it', () => {
    const why = landlockRefusal(needs7, 3);
    expect(why).not.toBeNull();
    expect(why).toContain("'needs-seven'");
    expect(why).toMatch(/Landlock ABI 7\b/);
    expect(why).toMatch(/offers 3\b/);
    expect(why).toMatch(/upgrade the kernel/);
    expect(why).toContain('6.15');
    expect(why).toContain('bestEffort');
    expect(why).not.toContain('\n');
  });

  it.each([
    ['the kernel meets minAbi', 7, 7],
    ['the kernel exceeds minAbi', 3, 7],
  ])('does not refuse a strict profile when %s (minAbi %i, kernel %i)', (_what, minAbi, abi) => {
    const p = profile('ok', (raw) => (raw.landlock = { ...raw.landlock, minAbi, bestEffort: false }));
    expect(landlockRefusal(p, abi)).toBeNull();
  });

  it('does not refuse a best-effort profile, even without Landlock', () => {
    const p = profile('best', (raw) => (raw.landlock = { ...raw.landlock, minAbi: 7, bestEffort: true }));
    expect(landlockRefusal(p, 0)).toBeNull();
  });

  function facts(abi: number, apparmor = false, apparmorLoaded: string[] | null = ['zviz-fn']): HostFacts {
    return {
      kernel: '6.1.0',
      arch: 'x86_64',
      userNamespaces: { available: true, maxUserNamespaces: 1000, detail: '' },
      cgroup: { driver: 'v2', controllers: ['memory', 'pids'], parents: {}, detail: '' },
      landlock: { abi, unenforced: unenforcedRights(abi), detail: '' },
      seccomp: { available: true, actions: ['user_notif'], userNotification: true, detail: '' },
      nftables: { available: true, detail: '' },
      lsm: { list: apparmor ? ['apparmor'] : [], apparmor, selinux: false, apparmorLoaded: apparmor ? apparmorLoaded : null },
      syscallAbis: { ia32: true, x32: false, detail: 'IA32 (int 0x80) present, x32 absent' },
      nativeAbi: 3,
    };
  }

  it('missingRequirements lists the refusal of each profile the kernel is too old for', () => {
    const missing = missingRequirements(facts(3), [profile('default'), needs7]);
    expect(missing).toContain(landlockRefusal(needs7, 3));
    expect(missing.filter((m) => m.includes("'default'"))).toEqual([]);
    expect(missingRequirements(facts(7), [needs7]).filter((m) => m.includes('Landlock'))).toEqual([]);
  });

  it('missingRequirements refuses a profile naming an AppArmor profile on a host without AppArmor, and only there', () => {
    const aa = profile('confined', (raw) => (raw.apparmorProfile = 'zviz-fn'));
    const without = missingRequirements(facts(7, false), [aa]).filter((m) => m.includes('AppArmor'));
    expect(without).toHaveLength(1);
    expect(without[0]).toContain("'confined'");
    expect(without[0]).toContain("'zviz-fn'");
    expect(without[0]).not.toContain('\n');
    expect(missingRequirements(facts(7, true), [aa]).filter((m) => m.includes('AppArmor'))).toEqual([]);
  });

  it('missingRequirements refuses a profile naming an AppArmor profile the kernel has not loaded, in one line saying how to load it', () => {
    const aa = profile('confined', (raw) => (raw.apparmorProfile = 'zviz-function'));
    for (const loaded of [['zviz-fn', 'other'], [], null]) {
      const lines = missingRequirements(facts(7, true, loaded), [aa]).filter((m) => m.includes('AppArmor'));
      expect(lines).toEqual([
        "Profile 'confined' names AppArmor profile 'zviz-function', which is not loaded: load it (apparmor_parser -r profiles/apparmor/zviz-function for the one ZViz ships) or remove apparmorProfile from the profile",
      ]);
    }
    expect(missingRequirements(facts(7, true, ['zviz-function']), [aa]).filter((m) => m.includes('AppArmor'))).toEqual([]);
  });

  it('parseAppArmorProfiles reads the names of the kernel list, modes and spaces included', () => {
    expect(parseAppArmorProfiles('zviz-function (enforce)\n/usr/bin/man (complain)\nweird name (enforce)\n\n')).toEqual([
      'zviz-function',
      '/usr/bin/man',
      'weird name',
    ]);
  });

  it('missingRequirements finds every refusal when given profiles.values(), a one-shot iterator, as server/main.ts does', () => {
    const aa = profile('confined', (raw) => (raw.apparmorProfile = 'zviz-fn'));
    const profiles = new Map([needs7, aa].map((p) => [p.name, p]));
    const fromIterator = missingRequirements(facts(3, false), profiles.values());
    const fromArray = missingRequirements(facts(3, false), [...profiles.values()]);
    expect(fromArray.filter((m) => m.includes("'needs-seven'") || m.includes("'confined'"))).toHaveLength(2);
    expect(fromIterator).toEqual(fromArray);
  });
});
