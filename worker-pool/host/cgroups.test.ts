// Host side of layer D over fixture texts of /proc/self/cgroup and /proc/self/mountinfo
// and an in-memory CgroupFs: no cgroup of this machine is read or touched.
import { posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  cgroupCpuMs,
  killAndRemove,
  killProcesses,
  parseMountinfo,
  parseProcCgroup,
  planCgroups,
  prepareParents,
  prepareV2,
  v2DelegationProblem,
  removeParents,
  sweepCgroups,
  type CgroupFs,
  type CgroupPlan,
} from './cgroups.js';

const { dirname, join } = posix;

function errno(code: string, path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${path}`), { code });
}

/**
 * A cgroupfs in memory. Like the kernel's: rmdir works on a directory holding only files,
 * fails with EBUSY while its cgroup.procs lists a process and with ENOTEMPTY while it has
 * child directories. `failWrite` makes the next writes of a path throw the given codes.
 */
class FakeFs implements CgroupFs {
  readonly dirs = new Set<string>(['/']);
  readonly files = new Map<string, string>();
  /** Every mutating call, in order: "write <path> <text>", "mkdir <path>", "rmdir <path>". */
  readonly log: string[] = [];
  readonly failWrite = new Map<string, string[]>();

  constructor(tree: Record<string, string> = {}, dirs: string[] = []) {
    for (const d of dirs) this.mkdirp(d);
    for (const [p, text] of Object.entries(tree)) {
      this.mkdirp(dirname(p));
      this.files.set(p, text);
    }
  }

  mkdirp(p: string): void {
    for (let d = p; d !== '/' && !this.dirs.has(d); d = dirname(d)) this.dirs.add(d);
  }

  readFile(p: string): string {
    const t = this.files.get(p);
    if (t === undefined) throw errno('ENOENT', p);
    return t;
  }

  writeFile(p: string, text: string): void {
    const fail = this.failWrite.get(p)?.shift();
    if (fail) {
      this.log.push(`write ${p} ${text} -> ${fail}`);
      throw errno(fail, p);
    }
    if (!this.dirs.has(dirname(p))) throw errno('ENOENT', p);
    this.log.push(`write ${p} ${text}`);
    this.files.set(p, text);
  }

  exists(p: string): boolean {
    return this.dirs.has(p) || this.files.has(p);
  }

  mkdir(p: string): void {
    if (this.exists(p)) throw errno('EEXIST', p);
    if (!this.dirs.has(dirname(p))) throw errno('ENOENT', p);
    this.log.push(`mkdir ${p}`);
    this.dirs.add(p);
  }

  rmdir(p: string): void {
    if (!this.dirs.has(p)) throw errno('ENOENT', p);
    if ([...this.dirs].some((d) => dirname(d) === p && d !== p)) throw errno('ENOTEMPTY', p);
    if ((this.files.get(join(p, 'cgroup.procs')) ?? '').trim() !== '') throw errno('EBUSY', p);
    this.log.push(`rmdir ${p}`);
    this.dirs.delete(p);
    for (const f of [...this.files.keys()]) if (dirname(f) === p) this.files.delete(f);
  }

  readdir(p: string): string[] {
    if (!this.dirs.has(p)) throw errno('ENOENT', p);
    const names = [...this.dirs].filter((d) => d !== p && dirname(d) === p);
    names.push(...[...this.files.keys()].filter((f) => dirname(f) === p));
    return names.map((n) => n.slice(p.length + 1)).sort();
  }

  /** What the kernel does when a listed process dies: it leaves every cgroup.procs. */
  reap(pid: number): void {
    for (const [p, text] of this.files) {
      if (!p.endsWith('/cgroup.procs')) continue;
      this.files.set(p, text.split('\n').filter((l) => l !== '' && Number(l) !== pid).map((l) => `${l}\n`).join(''));
    }
  }
}

// ---- fixtures ------------------------------------------------------------------------------

/** This machine, copied verbatim: a hybrid v1 host, cpu and cpuacct mounted apart, an empty cgroup2. */
const THIS_HOST_CGROUP = `9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/9019f8c6b390db7f14020f78de286d82
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
`;
const THIS_HOST_MOUNTINFO = `22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334460k,nr_inodes=3083615,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
28 27 0:25 / /mnt/sandboxing/model_tools_env/v1/python ro,nosuid,nodev,relatime - tmpfs model_tools_unavailable ro,size=4k,mode=755
29 26 0:26 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

/** systemd on a pure v2 host, the server a service. */
const V2_CGROUP = '0::/system.slice/zviz.service\n';
const V2_MOUNTINFO = `22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;
const V2_SERVER = '/sys/fs/cgroup/system.slice/zviz.service';

/** systemd hybrid (Ubuntu 20.04 style): cpu and cpuacct co-mounted, controllers on v1. */
const HYBRID_CGROUP = `12:freezer:/
11:pids:/system.slice/zviz.service
10:memory:/system.slice/zviz.service
6:devices:/system.slice/zviz.service
4:cpu,cpuacct:/system.slice/zviz.service
1:name=systemd:/system.slice/zviz.service
0::/system.slice/zviz.service
`;
const HYBRID_MOUNTINFO = `24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
33 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,freezer
34 25 0:32 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,devices
35 25 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,net_cls,net_prio
`;

const NO_CGROUP_MOUNTINFO = `22 1 259:2 / / rw,relatime - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,relatime - proc proc rw
`;

/** Every parent sits at <mount point>/<server's own cgroup>/zviz, never at a hierarchy root. */
function expectParentsBeneathServer(plan: CgroupPlan, procSelfCgroup: string, mountinfo: string): void {
  const own = parseProcCgroup(procSelfCgroup);
  const mounts = parseMountinfo(mountinfo).filter((m) => m.fstype === 'cgroup' || m.fstype === 'cgroup2');
  for (const p of plan.parents) {
    expect(posix.basename(p.parent)).toBe('zviz');
    const mount = mounts
      .filter((m) => p.parent.startsWith(`${m.point}/`))
      .sort((a, b) => b.point.length - a.point.length)[0];
    expect(mount, `a cgroup mount holds ${p.parent}`).toBeDefined();
    expect(p.parent).not.toBe(mount!.point);
    const key = p.controllers[0] === 'unified' ? '' : p.controllers[0]!;
    expect(p.parent).toBe(join(mount!.point, own.get(key)!, 'zviz'));
  }
}

// ---- planCgroups ---------------------------------------------------------------------------

describe('planCgroups', () => {
  it('picks v1 on this machine (hybrid, empty cgroup2), one parent per hierarchy under the server cgroup', () => {
    const fsys = new FakeFs({ '/sys/fs/cgroup/unified/cgroup.controllers': '\n' });
    const plan = planCgroups(THIS_HOST_CGROUP, THIS_HOST_MOUNTINFO, fsys);
    expect(plan.driver).toBe('v1');
    expect(plan.serverCgroup).toBeNull();
    expect(plan.controllers).toEqual(['cpu', 'cpuacct', 'memory', 'freezer', 'pids']);
    expect(plan.parents).toEqual([
      { controllers: ['cpu'], parent: '/sys/fs/cgroup/cpu/zviz' },
      { controllers: ['cpuacct'], parent: '/sys/fs/cgroup/cpuacct/zviz' },
      { controllers: ['memory'], parent: '/sys/fs/cgroup/memory/process_api/9019f8c6b390db7f14020f78de286d82/zviz' },
      { controllers: ['freezer'], parent: '/sys/fs/cgroup/freezer/zviz' },
      { controllers: ['pids'], parent: '/sys/fs/cgroup/pids/zviz' },
    ]);
    expect(plan.detail).toContain('hybrid host');
    expectParentsBeneathServer(plan, THIS_HOST_CGROUP, THIS_HOST_MOUNTINFO);
  });

  it('picks v1 on this machine also when the cgroup2 mount has no cgroup.controllers to read', () => {
    const plan = planCgroups(THIS_HOST_CGROUP, THIS_HOST_MOUNTINFO, new FakeFs());
    expect(plan.driver).toBe('v1');
  });

  it('picks v2 on a pure v2 host: one `unified` parent beneath the server cgroup', () => {
    const fsys = new FakeFs({ [`${V2_SERVER}/cgroup.controllers`]: 'cpuset cpu io memory pids\n' });
    const plan = planCgroups(V2_CGROUP, V2_MOUNTINFO, fsys);
    expect(plan).toMatchObject({
      driver: 'v2',
      controllers: ['memory', 'pids', 'cpu'],
      parents: [{ controllers: ['unified'], parent: `${V2_SERVER}/zviz` }],
      serverCgroup: V2_SERVER,
    });
    expect(plan.detail).toContain('/system.slice/zviz.service');
    expectParentsBeneathServer(plan, V2_CGROUP, V2_MOUNTINFO);
  });

  it('uses only the v2 controllers the server cgroup offers (no cpu: memory and pids)', () => {
    const fsys = new FakeFs({ [`${V2_SERVER}/cgroup.controllers`]: 'io memory pids' });
    expect(planCgroups(V2_CGROUP, V2_MOUNTINFO, fsys).controllers).toEqual(['memory', 'pids']);
  });

  it('puts the v2 parent at /sys/fs/cgroup/zviz, not the root itself, when the server runs in the root cgroup', () => {
    const fsys = new FakeFs({ '/sys/fs/cgroup/cgroup.controllers': 'cpu memory pids' });
    const plan = planCgroups('0::/\n', V2_MOUNTINFO, fsys);
    expect(plan.driver).toBe('v2');
    expect(posix.normalize(`${plan.serverCgroup}/`)).toBe('/sys/fs/cgroup/');
    expect(plan.parents).toEqual([{ controllers: ['unified'], parent: '/sys/fs/cgroup/zviz' }]);
  });

  it('falls to v1 when the v2 server cgroup lacks memory and v1 hierarchies carry it', () => {
    const fsys = new FakeFs({ '/sys/fs/cgroup/unified/system.slice/zviz.service/cgroup.controllers': 'cpu io pids' });
    const plan = planCgroups(HYBRID_CGROUP, HYBRID_MOUNTINFO, fsys);
    expect(plan.driver).toBe('v1');
    expect(plan.detail).toContain('/sys/fs/cgroup/unified');
  });

  it('gives `none` when the v2 server cgroup lacks memory and there is no v1 hierarchy', () => {
    const fsys = new FakeFs({ [`${V2_SERVER}/cgroup.controllers`]: 'cpuset cpu io pids' });
    const plan = planCgroups(V2_CGROUP, V2_MOUNTINFO, fsys);
    expect(plan).toMatchObject({ driver: 'none', controllers: [], parents: [], serverCgroup: null });
    expect(plan.detail).toContain('memory and pids');
  });

  it('gives co-mounted cpu,cpuacct one parent carrying both controllers', () => {
    const plan = planCgroups(HYBRID_CGROUP, HYBRID_MOUNTINFO, new FakeFs());
    expect(plan.driver).toBe('v1');
    expect(plan.parents).toEqual([
      { controllers: ['cpu', 'cpuacct'], parent: '/sys/fs/cgroup/cpu,cpuacct/system.slice/zviz.service/zviz' },
      { controllers: ['memory'], parent: '/sys/fs/cgroup/memory/system.slice/zviz.service/zviz' },
      { controllers: ['pids'], parent: '/sys/fs/cgroup/pids/system.slice/zviz.service/zviz' },
      { controllers: ['freezer'], parent: '/sys/fs/cgroup/freezer/zviz' },
    ]);
    expect(plan.controllers).toEqual(['cpu', 'cpuacct', 'memory', 'pids', 'freezer']);
    expectParentsBeneathServer(plan, HYBRID_CGROUP, HYBRID_MOUNTINFO);
  });

  it('gives `none` on a host without cgroup mounts', () => {
    const plan = planCgroups('', NO_CGROUP_MOUNTINFO, new FakeFs());
    expect(plan).toEqual({
      driver: 'none',
      controllers: [],
      parents: [],
      serverCgroup: null,
      detail: expect.stringContaining('no cgroup hierarchy') as unknown as string,
    });
  });

  it('gives `none` on v1 when the pids controller is not mounted', () => {
    const mountinfo = HYBRID_MOUNTINFO.split('\n').filter((l) => !l.includes('/sys/fs/cgroup/pids')).join('\n');
    expect(planCgroups(HYBRID_CGROUP, mountinfo, new FakeFs()).driver).toBe('none');
  });

  // A container without its own cgroup namespace on a v1 host (Docker's default there):
  // each hierarchy is a bind mount of the container's cgroup, so mountinfo's root field
  // (the 4th) is /docker/<id>, and /proc/self/cgroup shows the same /docker/<id>. The
  // server's cgroup is the mount point itself; /sys/fs/cgroup/memory/docker/<id> does
  // not exist inside the container.
  it('places v1 parents relative to the mount root when a hierarchy is a bind mount of the server cgroup', () => {
    const id = 'docker/4f1c2a';
    const cgroup = `11:pids:/${id}\n10:memory:/${id}\n4:cpu,cpuacct:/${id}\n1:name=systemd:/${id}\n`;
    const mountinfo = [
      `600 590 0:52 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755`,
      `601 600 0:28 /${id} /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime master:14 - cgroup cgroup rw,cpu,cpuacct`,
      `602 600 0:29 /${id} /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,memory`,
      `603 600 0:30 /${id} /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,pids`,
      '',
    ].join('\n');
    const plan = planCgroups(cgroup, mountinfo, new FakeFs());
    expect(plan.driver).toBe('v1');
    expect(plan.parents.map((p) => p.parent)).toEqual([
      '/sys/fs/cgroup/cpu,cpuacct/zviz',
      '/sys/fs/cgroup/memory/zviz',
      '/sys/fs/cgroup/pids/zviz',
    ]);
  });
});

describe('parseMountinfo and parseProcCgroup', () => {
  it('reads mount point, fstype and super options past optional fields, unescaping spaces', () => {
    const m = parseMountinfo('30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:14 master:2 - cgroup cgroup rw,cpu,cpuacct\n40 1 0:5 / /mnt/with\\040space rw - tmpfs tmpfs rw\n');
    expect(m).toEqual([
      { root: '/', point: '/sys/fs/cgroup/cpu,cpuacct', fstype: 'cgroup', superOpts: ['rw', 'cpu', 'cpuacct'] },
      { root: '/', point: '/mnt/with space', fstype: 'tmpfs', superOpts: ['rw'] },
    ]);
  });

  it('maps each v1 controller of a line to its path and the v2 line to ""', () => {
    const own = parseProcCgroup(HYBRID_CGROUP);
    expect(own.get('cpu')).toBe('/system.slice/zviz.service');
    expect(own.get('cpuacct')).toBe('/system.slice/zviz.service');
    expect(own.get('freezer')).toBe('/');
    expect(own.get('')).toBe('/system.slice/zviz.service');
  });
});

// ---- prepareV2 -----------------------------------------------------------------------------

function v2Plan(controllers = ['memory', 'pids', 'cpu']): CgroupPlan {
  return {
    driver: 'v2',
    controllers,
    parents: [{ controllers: ['unified'], parent: `${V2_SERVER}/zviz` }],
    serverCgroup: V2_SERVER,
    detail: '',
  };
}

describe('prepareV2', () => {
  it('enables +memory +pids +cpu for the server cgroup subtree, makes `zviz` and enables them there', () => {
    const fsys = new FakeFs({}, [V2_SERVER]);
    prepareV2(v2Plan(), fsys, 4242);
    expect(fsys.log).toEqual([
      `write ${V2_SERVER}/cgroup.subtree_control +memory +pids +cpu`,
      `mkdir ${V2_SERVER}/zviz`,
      `write ${V2_SERVER}/zviz/cgroup.subtree_control +memory +pids +cpu`,
    ]);
  });

  it('enables only the planned controllers', () => {
    const fsys = new FakeFs({}, [V2_SERVER]);
    prepareV2(v2Plan(['memory', 'pids']), fsys, 4242);
    expect(fsys.files.get(`${V2_SERVER}/cgroup.subtree_control`)).toBe('+memory +pids');
  });

  it('on EBUSY (the server is a process of its own cgroup) moves itself into `zviz-server` and retries', () => {
    const fsys = new FakeFs({}, [V2_SERVER]);
    fsys.failWrite.set(`${V2_SERVER}/cgroup.subtree_control`, ['EBUSY']);
    prepareV2(v2Plan(), fsys, 4242);
    expect(fsys.log).toEqual([
      `write ${V2_SERVER}/cgroup.subtree_control +memory +pids +cpu -> EBUSY`,
      `mkdir ${V2_SERVER}/zviz-server`,
      `write ${V2_SERVER}/zviz-server/cgroup.procs 4242`,
      `write ${V2_SERVER}/cgroup.subtree_control +memory +pids +cpu`,
      `mkdir ${V2_SERVER}/zviz`,
      `write ${V2_SERVER}/zviz/cgroup.subtree_control +memory +pids +cpu`,
    ]);
  });

  it('reuses an existing `zviz-server` leaf and `zviz` folder (a restarted server)', () => {
    const fsys = new FakeFs({}, [`${V2_SERVER}/zviz-server`, `${V2_SERVER}/zviz`]);
    fsys.failWrite.set(`${V2_SERVER}/cgroup.subtree_control`, ['EBUSY']);
    prepareV2(v2Plan(), fsys, 77);
    expect(fsys.log.filter((l) => l.startsWith('mkdir'))).toEqual([]);
    expect(fsys.files.get(`${V2_SERVER}/zviz-server/cgroup.procs`)).toBe('77');
    expect(fsys.files.get(`${V2_SERVER}/zviz/cgroup.subtree_control`)).toBe('+memory +pids +cpu');
  });

  it('throws other errors of the first write as they are', () => {
    const fsys = new FakeFs({}, [V2_SERVER]);
    fsys.failWrite.set(`${V2_SERVER}/cgroup.subtree_control`, ['EACCES']);
    expect(() => prepareV2(v2Plan(), fsys, 4242)).toThrow(/EACCES/);
    expect(fsys.exists(`${V2_SERVER}/zviz-server`)).toBe(false);
  });

  it('throws when the retry after moving is still EBUSY', () => {
    const fsys = new FakeFs({}, [V2_SERVER]);
    fsys.failWrite.set(`${V2_SERVER}/cgroup.subtree_control`, ['EBUSY', 'EBUSY']);
    expect(() => prepareV2(v2Plan(), fsys, 4242)).toThrow(/EBUSY/);
  });

  it('a server sharing its non-root cgroup with other processes stops with one line saying what to do, and writes nothing', () => {
    const fsys = new FakeFs({ [`${V2_SERVER}/cgroup.procs`]: '100\n4242\n', [`${V2_SERVER}/cgroup.events`]: 'populated 1\n', [`${V2_SERVER}/cgroup.subtree_control`]: '' });
    let message = '';
    try {
      prepareV2(v2Plan(), fsys, 4242);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message.split('\n')).toHaveLength(1);
    expect(message).toContain(`Cannot delegate cgroup controllers from ${V2_SERVER}: it also holds processes 100,`);
    expect(message).toContain('Delegate=yes');
    expect(message).toContain('systemd-run --scope -p Delegate=yes');
    expect(message).toContain('dedicated cgroup');
    expect(fsys.log).toEqual([]);
    expect(v2DelegationProblem(v2Plan(), fsys, 4242)).toBe(message);
  });

  it('a server alone in its non-root cgroup moves itself into the leaf (no problem reported)', () => {
    const fsys = new FakeFs({ [`${V2_SERVER}/cgroup.procs`]: '4242\n', [`${V2_SERVER}/cgroup.events`]: 'populated 1\n', [`${V2_SERVER}/cgroup.subtree_control`]: '' });
    fsys.failWrite.set(`${V2_SERVER}/cgroup.subtree_control`, ['EBUSY']);
    expect(v2DelegationProblem(v2Plan(), fsys, 4242)).toBeNull();
    prepareV2(v2Plan(), fsys, 4242);
    expect(fsys.files.get(`${V2_SERVER}/zviz-server/cgroup.procs`)).toBe('4242');
  });

  it('the root cgroup (no cgroup.events) and a cgroup already delegating the controllers are no problem', () => {
    const root = new FakeFs({ [`${V2_SERVER}/cgroup.procs`]: '1\n100\n4242\n', [`${V2_SERVER}/cgroup.subtree_control`]: '' });
    expect(v2DelegationProblem(v2Plan(), root, 4242)).toBeNull();
    const delegated = new FakeFs({
      [`${V2_SERVER}/cgroup.procs`]: '',
      [`${V2_SERVER}/cgroup.events`]: 'populated 1\n',
      [`${V2_SERVER}/cgroup.subtree_control`]: 'cpu memory pids\n',
    });
    expect(v2DelegationProblem(v2Plan(), delegated, 4242)).toBeNull();
  });

  it('does nothing for a v1 or `none` plan', () => {
    const fsys = new FakeFs({}, [V2_SERVER]);
    prepareV2({ ...v2Plan(), driver: 'v1' }, fsys, 1);
    prepareV2({ ...v2Plan(), driver: 'none', serverCgroup: null }, fsys, 1);
    expect(fsys.log).toEqual([]);
  });
});

describe('prepareParents', () => {
  it('makes each missing v1 `zviz` folder and leaves existing ones', () => {
    const fsys = new FakeFs({}, ['/sys/fs/cgroup/memory', '/sys/fs/cgroup/pids/zviz']);
    prepareParents(
      {
        driver: 'v1',
        controllers: ['memory', 'pids'],
        parents: [
          { controllers: ['memory'], parent: '/sys/fs/cgroup/memory/zviz' },
          { controllers: ['pids'], parent: '/sys/fs/cgroup/pids/zviz' },
        ],
        serverCgroup: null,
        detail: '',
      },
      fsys,
    );
    expect(fsys.log).toEqual(['mkdir /sys/fs/cgroup/memory/zviz']);
  });
});

// ---- sweepCgroups --------------------------------------------------------------------------

const DEAD = 111;
const ALIVE = 222;
const isAlive = (pid: number): boolean => pid === ALIVE;

describe('sweepCgroups', () => {
  const parent = `${V2_SERVER}/zviz`;

  it('kills what is left in a dead server`s sandbox dirs and removes them; keeps live ones; ignores other names', () => {
    const fsys = new FakeFs({
      [`${parent}/cgroup.procs`]: '',
      [`${parent}/cgroup.subtree_control`]: '+memory',
      [`${parent}/zviz-${DEAD}-inv-a/cgroup.procs`]: '3001\n3002\n',
      [`${parent}/zviz-${DEAD}-inv-b/cgroup.procs`]: '',
      [`${parent}/zviz-${ALIVE}-inv-c/cgroup.procs`]: '4001\n',
      [`${parent}/zviz-server/cgroup.procs`]: '9\n',
      [`${parent}/zviz-abc-inv/cgroup.procs`]: '9\n',
      [`${parent}/other/cgroup.procs`]: '9\n',
    });
    const killed: number[] = [];
    const res = sweepCgroups(v2Plan(), isAlive, (pid) => {
      killed.push(pid);
      fsys.reap(pid);
    }, fsys);
    expect(killed).toEqual([3001, 3002]);
    expect(res.killed).toEqual([3001, 3002]);
    expect(res.removed.sort()).toEqual([`${parent}/zviz-${DEAD}-inv-a`, `${parent}/zviz-${DEAD}-inv-b`]);
    expect(res.kept).toEqual([`${parent}/zviz-${ALIVE}-inv-c`]);
    expect(fsys.exists(`${parent}/zviz-${DEAD}-inv-a`)).toBe(false);
    expect(fsys.exists(`${parent}/zviz-${ALIVE}-inv-c`)).toBe(true);
    expect(fsys.exists(`${parent}/zviz-server`)).toBe(true);
    expect(fsys.exists(`${parent}/zviz-abc-inv`)).toBe(true);
    expect(fsys.exists(`${parent}/other`)).toBe(true);
    expect(fsys.log.some((l) => l.includes('freezer.state'))).toBe(false);
  });

  it('kills only real pids from cgroup.procs (not 0, 1 or junk)', () => {
    const fsys = new FakeFs({ [`${parent}/zviz-${DEAD}-x/cgroup.procs`]: '0\n1\nabc\n3003\n' });
    const killed: number[] = [];
    sweepCgroups(v2Plan(), isAlive, (pid) => {
      killed.push(pid);
      fsys.files.set(`${parent}/zviz-${DEAD}-x/cgroup.procs`, '');
    }, fsys);
    expect(killed).toEqual([3003]);
  });

  it('on v1 freezes the freezer dir before the kills and thaws it after; other hierarchies get no freezer.state', () => {
    const mem = '/sys/fs/cgroup/memory/zviz';
    const frz = '/sys/fs/cgroup/freezer/zviz';
    const fsys = new FakeFs({
      [`${mem}/zviz-${DEAD}-inv/cgroup.procs`]: '',
      [`${frz}/zviz-${DEAD}-inv/cgroup.procs`]: '5001\n',
      [`${frz}/zviz-${DEAD}-inv/freezer.state`]: 'THAWED\n',
    });
    const plan: CgroupPlan = {
      driver: 'v1',
      controllers: ['memory', 'freezer'],
      parents: [
        { controllers: ['memory'], parent: mem },
        { controllers: ['freezer'], parent: frz },
      ],
      serverCgroup: null,
      detail: '',
    };
    const res = sweepCgroups(plan, isAlive, (pid) => {
      fsys.log.push(`kill ${pid}`);
      fsys.reap(pid);
    }, fsys);
    expect(fsys.log).toEqual([
      `rmdir ${mem}/zviz-${DEAD}-inv`,
      `write ${frz}/zviz-${DEAD}-inv/freezer.state FROZEN`,
      'kill 5001',
      `write ${frz}/zviz-${DEAD}-inv/freezer.state THAWED`,
      `rmdir ${frz}/zviz-${DEAD}-inv`,
    ]);
    expect(res.removed).toEqual([`${mem}/zviz-${DEAD}-inv`, `${frz}/zviz-${DEAD}-inv`]);
  });

  it('retries rmdir while the dir is busy, then removes it', () => {
    const dir = `${parent}/zviz-${DEAD}-slow`;
    const fsys = new FakeFs({ [`${dir}/cgroup.procs`]: '' });
    let busy = 3;
    const rmdir = fsys.rmdir.bind(fsys);
    fsys.rmdir = (p: string) => {
      if (p === dir && busy-- > 0) throw errno('EBUSY', p);
      rmdir(p);
    };
    expect(sweepCgroups(v2Plan(), isAlive, () => {}, fsys).removed).toEqual([dir]);
  });

  it('keeps (and reports) a dir it cannot remove', () => {
    const dir = `${parent}/zviz-${DEAD}-stuck`;
    const fsys = new FakeFs({ [`${dir}/cgroup.procs`]: '' }, [`${dir}/child`]);
    const res = sweepCgroups(v2Plan(), isAlive, () => {}, fsys);
    expect(res.removed).toEqual([]);
    expect(res.kept).toEqual([dir]);
  });

  it('skips parents that do not exist', () => {
    const fsys = new FakeFs();
    expect(sweepCgroups(v2Plan(), isAlive, () => {}, fsys)).toEqual({ removed: [], killed: [], kept: [] });
  });

  // server/main.ts passes `(pid) => process.kill(pid, 'SIGKILL')`, which throws ESRCH for a
  // process that ended between the read of cgroup.procs and the kill (killing a sandbox's
  // init ends the rest of its pid namespace). The sweep runs at start-up inside a
  // try/fatal: one such race must not stop the server or leave the dir behind.
  it('goes on when a listed process is already gone (kill throws ESRCH)', () => {
    const dir = `${parent}/zviz-${DEAD}-race`;
    const fsys = new FakeFs({ [`${dir}/cgroup.procs`]: '6001\n6002\n' });
    const killed: number[] = [];
    let res: ReturnType<typeof sweepCgroups> | undefined;
    expect(() => {
      res = sweepCgroups(v2Plan(), isAlive, (pid) => {
        fsys.reap(6001); // init died: 6001 is gone by now, 6002 is still being killed
        if (pid === 6001) throw errno('ESRCH', String(pid));
        killed.push(pid);
        fsys.reap(pid);
      }, fsys);
    }).not.toThrow();
    expect(killed).toEqual([6002]);
    expect(res?.removed).toEqual([dir]);
  });
});

describe('removeParents', () => {
  it('removes every `zviz` folder and ignores ENOENT, EBUSY and ENOTEMPTY', () => {
    const plan: CgroupPlan = {
      driver: 'v1',
      controllers: ['memory', 'pids', 'cpu'],
      parents: [
        { controllers: ['memory'], parent: '/sys/fs/cgroup/memory/zviz' },
        { controllers: ['pids'], parent: '/sys/fs/cgroup/pids/zviz' },
        { controllers: ['cpu'], parent: '/sys/fs/cgroup/cpu/zviz' },
        { controllers: ['freezer'], parent: '/sys/fs/cgroup/freezer/zviz' },
      ],
      serverCgroup: null,
      detail: '',
    };
    const fsys = new FakeFs(
      { '/sys/fs/cgroup/cpu/zviz/cgroup.procs': '12\n' }, // busy: EBUSY
      ['/sys/fs/cgroup/memory/zviz', '/sys/fs/cgroup/pids/zviz/zviz-999-sibling'], // pids: ENOTEMPTY
    );
    expect(() => removeParents(plan, fsys)).not.toThrow();
    expect(fsys.exists('/sys/fs/cgroup/memory/zviz')).toBe(false);
    expect(fsys.exists('/sys/fs/cgroup/pids/zviz')).toBe(true);
    expect(fsys.exists('/sys/fs/cgroup/cpu/zviz')).toBe(true);
  });

  it('ignores any error thrown by rmdir', () => {
    const fsys = new FakeFs();
    fsys.rmdir = () => {
      throw new Error('EACCES');
    };
    expect(() => removeParents(v2Plan(), fsys)).not.toThrow();
  });
});

describe('killAndRemove', () => {
  const dir = `${V2_SERVER}/zviz/zviz-${ALIVE}-left`;

  it('removes a folder its supervisor left, killing what is still inside, and counts a vanished one as removed', () => {
    const fsys = new FakeFs({ [`${dir}/cgroup.procs`]: '7001\n7002\n' });
    const out = killAndRemove(dir, { fsys, kill: (pid) => fsys.reap(pid) });
    expect(out).toEqual({ removed: true, killed: [7001, 7002] });
    expect(killAndRemove(dir, { fsys, kill: () => {} })).toEqual({ removed: true, killed: [] });
  });

  it('gives up on a folder that stays busy, and says so', () => {
    const fsys = new FakeFs({ [`${dir}/cgroup.procs`]: '7003\n' });
    let kills = 0;
    const out = killAndRemove(dir, { fsys, kill: () => kills++ });
    expect(out.removed).toBe(false);
    expect(out.killed).toEqual([7003]);
    expect(kills).toBeGreaterThan(1);
  });

  it('killProcesses signals every listed process but leaves the folder to its supervisor', () => {
    const fsys = new FakeFs({ [`${dir}/cgroup.procs`]: '1\n7004\n' });
    const killed: number[] = [];
    expect(killProcesses(dir, (pid) => killed.push(pid), fsys)).toEqual([7004]);
    expect(killed).toEqual([7004]);
    expect(fsys.exists(dir)).toBe(true);
    expect(killProcesses(`${dir}-gone`, () => {}, fsys)).toEqual([]);
  });
});

describe('cgroupCpuMs', () => {
  it('reads usage_usec of a v2 cpu.stat, cpuacct.usage on v1, and null where neither exists', () => {
    const fsys = new FakeFs({
      '/v2/zs/cpu.stat': 'usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n',
      '/v1/zs/cpu.stat': 'nr_periods 3\nnr_throttled 1\n',
      '/v1/zs/cpuacct.usage': '2500000000\n',
    }, ['/gone']);
    expect(cgroupCpuMs('/v2/zs', fsys)).toBeCloseTo(1234.567);
    expect(cgroupCpuMs('/v1/zs', fsys)).toBe(2500);
    expect(cgroupCpuMs('/gone/zs', fsys)).toBeNull();
  });
});
