// encodeSpec against the layout native/src/spec.c parses: every test decodes the buffer
// back by hand (u16 tag LE, u16 zero, u32 length LE, payload) and checks the bytes, so a
// drift between the two sides shows here without building the native code. The tag
// numbers and the order of struct zv_limits are also read from native/src/internal.h.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeEach, describe, expect, it } from 'vitest';
import { FS, landlockPolicy } from './landlock.js';
import { encodeGo, encodeSpec, GO_TAG, MAX_BROKERED_FILE_BYTES, SPEC_FLAGS, TAG, type HostLayout } from './spec.js';
import type { SandboxTask } from './task.js';

const MiB = 1024 * 1024;
const INTERNAL_H = fileURLToPath(new URL('../native/src/internal.h', import.meta.url));

interface Rec {
  tag: number;
  reserved: number;
  payload: Buffer;
}

/** Splits the buffer into records, checking that they tile it exactly. */
function decode(buf: Buffer): Rec[] {
  const out: Rec[] = [];
  let off = 0;
  while (off < buf.length) {
    expect(buf.length - off, `record header at offset ${off}`).toBeGreaterThanOrEqual(8);
    const tag = buf.readUInt16LE(off);
    const reserved = buf.readUInt16LE(off + 2);
    const len = buf.readUInt32LE(off + 4);
    expect(off + 8 + len, `record at offset ${off} overruns`).toBeLessThanOrEqual(buf.length);
    out.push({ tag, reserved, payload: buf.subarray(off + 8, off + 8 + len) });
    off += 8 + len;
  }
  expect(off).toBe(buf.length);
  return out;
}

const payloads = (recs: Rec[], tag: number): Buffer[] => recs.filter((r) => r.tag === tag).map((r) => r.payload);
const strings = (recs: Rec[], tag: number): string[] => payloads(recs, tag).map((p) => p.toString('utf8'));

function only(recs: Rec[], tag: number): Buffer {
  const p = payloads(recs, tag);
  expect(p, `exactly one record of tag ${tag}`).toHaveLength(1);
  return p[0]!;
}

/** u32 length of the first part, the first part, the rest (FILE, BIND, CGROUP body). */
function split2(p: Buffer): [string, Buffer] {
  const len = p.readUInt32LE(0);
  expect(4 + len).toBeLessThanOrEqual(p.length);
  return [p.subarray(4, 4 + len).toString('utf8'), p.subarray(4 + len)];
}

const LIMIT_FIELDS = [
  'timeout_ms',
  'output_bytes',
  'memory_bytes',
  'pids',
  'cpu_millis',
  'tmp_bytes',
  'shm_bytes',
  'nofile',
  'fsize_bytes',
] as const;

function decodeLimits(p: Buffer): Record<(typeof LIMIT_FIELDS)[number], bigint> & { flags: number; reserved: number } {
  expect(p.length).toBe(80);
  const out = Object.fromEntries(LIMIT_FIELDS.map((f, i) => [f, p.readBigUInt64LE(i * 8)])) as Record<
    (typeof LIMIT_FIELDS)[number],
    bigint
  >;
  return { ...out, flags: p.readUInt32LE(72), reserved: p.readUInt32LE(76) };
}

function makeTask(over: { limits?: Partial<SandboxTask['limits']>; profile?: Partial<SandboxTask['profile']> } & Partial<
  Omit<SandboxTask, 'limits' | 'profile'>
> = {}): SandboxTask {
  const { limits, profile, ...rest } = over;
  return {
    id: 'inv-1',
    runtime: 'node',
    argv: ['/usr/bin/node', '/fn/main.js', '--flag'],
    env: { PATH: '/usr/bin:/bin', HOME: '/tmp', EMPTY: '', EQ: 'a=b' },
    files: [{ name: 'main.js', content: 'console.log(1)' }],
    stdin: '{"x":1}',
    limits: { timeoutMs: 5000, memoryMb: 256, pids: 64, cpus: 1.5, outputBytes: 1048576, ...limits },
    profile: {
      name: 'default',
      filesystem: { tmpSizeMb: 64, shmSizeMb: 16, tmpExec: false, readOnlyBinds: [] },
      landlock: { minAbi: 3, bestEffort: true, readOnly: [], readWrite: [], tcpBind: [], tcpConnect: [] },
      seccompAllow: ['read', 'write', 'exit_group'],
      socketFamilies: [1, 2, 10],
      brokeredFiles: [],
      network: { mode: 'none' },
      rlimits: { nofile: 1024, fsizeMb: 32 },
      ...profile,
    },
    ...rest,
  };
}

const HOST: HostLayout = { rootBase: '/var/lib/zviz/root', uidBase: 100000, cgroup: null, network: null };
const ID = '1234-inv-1';

describe('encodeSpec record framing', () => {
  it('writes records whose u16 reserved field is zero and whose lengths tile the buffer', () => {
    const recs = decode(encodeSpec(makeTask(), ID, HOST));
    expect(recs.length).toBeGreaterThan(5);
    for (const r of recs) expect(r.reserved).toBe(0);
  });

  it('uses only tags that native/src/internal.h defines, with the same numbers', () => {
    const header = readFileSync(INTERNAL_H, 'utf8');
    const native = new Map<string, number>();
    for (const m of header.matchAll(/^\s*ZV_T_([A-Z0-9_]+)\s*=\s*(\d+)\s*,/gm)) native.set(m[1]!, Number(m[2]));
    expect(native.size).toBeGreaterThan(0);
    expect(Object.fromEntries(native)).toEqual({ ...TAG });
  });

  it('uses the spec flags native/src/internal.h defines, with the same bits', () => {
    const header = readFileSync(INTERNAL_H, 'utf8');
    const native: Record<string, number> = {};
    for (const m of header.matchAll(/^#define ZV_SF_([A-Z_]+) \(1u << (\d+)\)/gm)) native[m[1]!] = 2 ** Number(m[2]);
    expect(native).toEqual({ ...SPEC_FLAGS });
  });

  it('sets REUSE (and RESET_TMP for reset "tmp") only for a warm spec of a task with reuse', () => {
    const flags = (b: Buffer) => decode(b).find((r) => r.tag === TAG.FLAGS)?.payload.readUInt32LE(0) ?? null;
    const reuse = { key: 'k', owner: { tenant: 't', function: 'f', version: 1 }, maxInvocations: 2, idleMs: 1000, template: { argv: [], env: {}, files: [] } };
    expect(flags(encodeSpec({ ...makeTask(), reuse: { ...reuse, reset: 'tmp' } }, ID, HOST, undefined, true))).toBe(7);
    expect(flags(encodeSpec({ ...makeTask(), reuse: { ...reuse, reset: 'none' } }, ID, HOST, undefined, true))).toBe(3);
    expect(flags(encodeSpec({ ...makeTask(), reuse: { ...reuse, reset: 'tmp' } }, ID, HOST))).toBeNull();
    expect(flags(encodeSpec(makeTask(), ID, HOST, undefined, true))).toBe(1);
  });

  it('bounds brokered files as native/src/internal.h does (ZV_MAX_BROKERED_BYTES)', () => {
    const m = /#define ZV_MAX_BROKERED_BYTES \(1u << (\d+)\)/.exec(readFileSync(INTERNAL_H, 'utf8'));
    expect(m).not.toBeNull();
    expect(2 ** Number(m![1])).toBe(MAX_BROKERED_FILE_BYTES);
  });
});

describe('encodeSpec strings', () => {
  let recs: Rec[] = [];
  beforeEach(() => {
    recs = decode(encodeSpec(makeTask(), ID, HOST));
  });

  it('writes the sandbox id as the ID record', () => {
    expect(strings(recs, TAG.ID)).toEqual([ID]);
  });

  it('writes one ARGV record per argument, in order', () => {
    expect(strings(recs, TAG.ARGV)).toEqual(['/usr/bin/node', '/fn/main.js', '--flag']);
  });

  it('writes env as K=V, keeping empty values and = inside values', () => {
    expect(strings(recs, TAG.ENV)).toEqual(['PATH=/usr/bin:/bin', 'HOME=/tmp', 'EMPTY=', 'EQ=a=b']);
  });

  it('writes root base as a string and uid base as a u32 LE', () => {
    expect(strings(recs, TAG.ROOT_BASE)).toEqual(['/var/lib/zviz/root']);
    const uid = only(recs, TAG.UID_BASE);
    expect(uid.length).toBe(4);
    expect(uid.readUInt32LE(0)).toBe(100000);
  });

  it('writes stdin as raw UTF-8 bytes', () => {
    expect(strings(recs, TAG.STDIN)).toEqual(['{"x":1}']);
  });

  it('writes no STDIN record when stdin is empty', () => {
    expect(payloads(decode(encodeSpec(makeTask({ stdin: '' }), ID, HOST)), TAG.STDIN)).toEqual([]);
  });

  it('writes no APPARMOR record without a profile, one with it', () => {
    expect(payloads(recs, TAG.APPARMOR)).toEqual([]);
    const withAa = decode(encodeSpec(makeTask({ profile: { apparmorProfile: 'zviz-fn' } }), ID, HOST));
    expect(strings(withAa, TAG.APPARMOR)).toEqual(['zviz-fn']);
  });
});

describe('encodeSpec image root', () => {
  it('writes no IMAGE or WORKDIR record for a host-rooted task', () => {
    const recs = decode(encodeSpec(makeTask(), ID, HOST));
    expect(payloads(recs, TAG.IMAGE)).toEqual([]);
    expect(payloads(recs, TAG.WORKDIR)).toEqual([]);
  });

  it('writes the owner ids, then the rootfs path, and the working directory; Landlock grants read+exec on /', () => {
    const task = makeTask();
    task.image = { digest: `sha256:${'a'.repeat(64)}`, rootfs: '/var/lib/zviz/images/sha256-a/rootfs', owner: { uid: 1001, gid: 1002 }, workdir: '/srv' };
    const recs = decode(encodeSpec(task, ID, HOST));
    const img = only(recs, TAG.IMAGE);
    expect([img.readUInt32LE(0), img.readUInt32LE(4), img.subarray(8).toString()]).toEqual([1001, 1002, '/var/lib/zviz/images/sha256-a/rootfs']);
    expect(strings(recs, TAG.WORKDIR)).toEqual(['/srv']);
    const paths = payloads(recs, TAG.LL_PATH).map((p) => p.subarray(12).toString());
    expect(paths).toContain('/');
    expect(paths).not.toContain('/usr');
  });
});

describe('encodeSpec job workspace', () => {
  it('writes no WORKSPACE record without one', () => {
    expect(payloads(decode(encodeSpec(makeTask(), ID, HOST)), TAG.WORKSPACE)).toEqual([]);
  });

  it('writes u32 source length, source, target; the target is the working directory and Landlock grants it read, write and execute', () => {
    const task = makeTask();
    task.workspace = { source: '/run/zviz/jobs/42-job', target: '/workspace' };
    const recs = decode(encodeSpec(task, ID, HOST));
    const ws = only(recs, TAG.WORKSPACE);
    const n = ws.readUInt32LE(0);
    expect([ws.subarray(4, 4 + n).toString(), ws.subarray(4 + n).toString()]).toEqual(['/run/zviz/jobs/42-job', '/workspace']);
    expect(strings(recs, TAG.WORKDIR)).toEqual(['/workspace']);
    const rule = payloads(recs, TAG.LL_PATH).find((p) => p.subarray(12).toString() === '/workspace')!;
    const access = rule.readBigUInt64LE(0);
    expect(access & FS.execute).toBe(FS.execute);
    expect(access & FS.write_file).toBe(FS.write_file);
    expect(access & FS.make_char).toBe(0n);
  });

  it('in an image, the workspace wins over the image WorkingDir', () => {
    const task = makeTask();
    task.image = { digest: `sha256:${'a'.repeat(64)}`, rootfs: '/var/lib/zviz/images/sha256-a/rootfs', owner: { uid: 1001, gid: 1002 }, workdir: '/srv' };
    task.workspace = { source: '/run/zviz/jobs/42-job', target: '/workspace' };
    expect(strings(decode(encodeSpec(task, ID, HOST)), TAG.WORKDIR)).toEqual(['/workspace']);
  });
});

describe('encodeSpec files', () => {
  it('writes u32 name length, name, content; lengths in bytes, not UTF-16 units', () => {
    const files = [
      { name: 'main.js', content: 'console.log(1)' },
      { name: 'café.txt', content: 'naïve ✓' },
      { name: 'empty', content: '' },
    ];
    const recs = decode(encodeSpec(makeTask({ files }), ID, HOST));
    const got = payloads(recs, TAG.FILE);
    expect(got).toHaveLength(3);
    expect(got[1]!.readUInt32LE(0)).toBe(Buffer.byteLength('café.txt'));
    expect(got.map((p) => {
      const [name, content] = split2(p);
      return { name, content: content.toString('utf8') };
    })).toEqual(files);
  });
});

describe('encodeSpec limits', () => {
  it('writes 80 bytes in the order of struct zv_limits in native/src/internal.h', () => {
    const header = readFileSync(INTERNAL_H, 'utf8');
    const body = /struct zv_limits \{([^}]*)\}/.exec(header)?.[1] ?? '';
    const fields = [...body.matchAll(/^\s*(uint\d+_t)\s+(\w+);/gm)].map((m) => [m[1], m[2]]);
    expect(fields).toEqual([
      ...LIMIT_FIELDS.map((f) => ['uint64_t', f]),
      ['uint32_t', 'flags'],
      ['uint32_t', 'reserved'],
    ]);
    const l = only(decode(encodeSpec(makeTask(), ID, HOST)), TAG.LIMITS);
    expect(l.length).toBe(9 * 8 + 4 + 4);
  });

  it('writes each limit little-endian: MiB to bytes, cpus to millis, rlimits and tmpfs sizes', () => {
    const l = decodeLimits(only(decode(encodeSpec(makeTask(), ID, HOST)), TAG.LIMITS));
    expect(l).toEqual({
      timeout_ms: 5000n,
      output_bytes: 1048576n,
      memory_bytes: 256n * BigInt(MiB),
      pids: 64n,
      cpu_millis: 1500n,
      tmp_bytes: 64n * BigInt(MiB),
      shm_bytes: 16n * BigInt(MiB),
      nofile: 1024n,
      fsize_bytes: 32n * BigInt(MiB),
      flags: 0,
      reserved: 0,
    });
  });

  it('sets flags bit 0 when the profile allows exec from /tmp', () => {
    const task = makeTask();
    task.profile.filesystem = { ...task.profile.filesystem, tmpExec: true };
    const l = decodeLimits(only(decode(encodeSpec(task, ID, HOST)), TAG.LIMITS));
    expect(l.flags).toBe(1);
    expect(l.reserved).toBe(0);
  });

  it.each([
    [0.01, 10n],
    [0.5, 500n],
    [0.3333, 333n],
    [1, 1000n],
    [64, 64000n],
  ])('writes cpus %s as cpu_millis %s', (cpus, millis) => {
    const l = decodeLimits(only(decode(encodeSpec(makeTask({ limits: { cpus } }), ID, HOST)), TAG.LIMITS));
    expect(l.cpu_millis).toBe(millis);
  });

  it('writes memory above 4 GiB without truncation to 32 bits', () => {
    const l = decodeLimits(only(decode(encodeSpec(makeTask({ limits: { memoryMb: 65536 } }), ID, HOST)), TAG.LIMITS));
    expect(l.memory_bytes).toBe(64n * 1024n * BigInt(MiB));
  });
});

describe('encodeSpec binds and cgroups', () => {
  it('writes each read-only bind as u32 source length, source, target', () => {
    const task = makeTask();
    task.profile.filesystem = {
      ...task.profile.filesystem,
      readOnlyBinds: [
        { source: '/etc', target: '/host/etc' },
        { source: '/opt/data', target: '/data' },
      ],
    };
    const binds = payloads(decode(encodeSpec(task, ID, HOST)), TAG.BIND).map((p) => {
      const [source, target] = split2(p);
      return { source, target: target.toString('utf8') };
    });
    expect(binds).toEqual(task.profile.filesystem.readOnlyBinds);
  });

  function cgroups(host: HostLayout) {
    return payloads(decode(encodeSpec(makeTask(), ID, host)), TAG.CGROUP).map((p) => {
      const version = p.readUInt32LE(0);
      const [controller, parent] = split2(p.subarray(4));
      return { version, controller, parent: parent.toString('utf8') };
    });
  }

  it('writes no CGROUP record when the host has no cgroup driver', () => {
    expect(cgroups(HOST)).toEqual([]);
  });

  it('writes one v2 record: u32 2, u32 controller length, `unified`, parent', () => {
    const parent = '/sys/fs/cgroup/system.slice/zviz.service/zviz';
    const host: HostLayout = { ...HOST, cgroup: { version: 2, parents: [{ controllers: ['unified'], parent }] } };
    expect(cgroups(host)).toEqual([{ version: 2, controller: 'unified', parent }]);
  });

  it('writes one v1 record per hierarchy, co-mounted controllers joined by a comma', () => {
    const host: HostLayout = {
      ...HOST,
      cgroup: {
        version: 1,
        parents: [
          { controllers: ['memory'], parent: '/sys/fs/cgroup/memory/zviz' },
          { controllers: ['cpu', 'cpuacct'], parent: '/sys/fs/cgroup/cpu,cpuacct/zviz' },
          { controllers: ['pids'], parent: '/sys/fs/cgroup/pids/zviz' },
        ],
      },
    };
    expect(cgroups(host)).toEqual([
      { version: 1, controller: 'memory', parent: '/sys/fs/cgroup/memory/zviz' },
      { version: 1, controller: 'cpu,cpuacct', parent: '/sys/fs/cgroup/cpu,cpuacct/zviz' },
      { version: 1, controller: 'pids', parent: '/sys/fs/cgroup/pids/zviz' },
    ]);
  });
});

describe('encodeSpec landlock and seccomp', () => {
  it('writes LL_CONF (u32 flags, u32 min ABI), then the policy paths and ports of landlockPolicy', () => {
    const task = makeTask();
    task.profile.landlock = { ...task.profile.landlock, bestEffort: false, minAbi: 4, tcpBind: [8080], tcpConnect: [443, 8080] };
    const recs = decode(encodeSpec(task, ID, HOST));
    const conf = only(recs, TAG.LL_CONF);
    expect(conf.length).toBe(8);
    expect(conf.readUInt32LE(0)).toBe(1); // enabled, not best effort
    expect(conf.readUInt32LE(4)).toBe(4);
    const policy = landlockPolicy(task.profile);
    const paths = payloads(recs, TAG.LL_PATH).map((p) => ({
      access: p.readBigUInt64LE(0),
      optional: p.readUInt32LE(8) === 1,
      path: p.subarray(12).toString('utf8'),
    }));
    expect(paths).toEqual(policy.paths.map((r) => ({ access: r.access, optional: r.optional, path: r.path })));
    const ports = payloads(recs, TAG.LL_PORT).map((p) => {
      expect(p.length).toBe(16);
      return { access: p.readBigUInt64LE(0), port: Number(p.readBigUInt64LE(8)) };
    });
    expect(ports).toEqual([
      { access: 3n, port: 8080 },
      { access: 2n, port: 443 },
    ]);
  });

  it('sets the best-effort bit in LL_CONF when the profile allows it', () => {
    expect(only(decode(encodeSpec(makeTask(), ID, HOST)), TAG.LL_CONF).readUInt32LE(0)).toBe(3);
  });

  it('sets LL_CONF bit 2 (connect left to the network layer) when an egress rule allows every TCP port', () => {
    const task = makeTask();
    task.profile.network = {
      mode: 'egress',
      allow: [{ cidr: '10.0.0.0/8', ports: [], protocol: 'tcp' }],
      limits: {},
    };
    expect(only(decode(encodeSpec(task, ID, HOST)), TAG.LL_CONF).readUInt32LE(0)).toBe(1 | 2 | 4);
  });

  it('writes SC_CONF enabled with the socket families as a bit mask, one SC_ALLOW per syscall, brokered files as u32 flags + pair', () => {
    const task = makeTask();
    task.profile.brokeredFiles = [{ path: '/etc/ssl/cert.pem', source: '/etc/ssl/certs/ca-certificates.crt' }];
    task.profile.socketFamilies = [1, 2, 10, 45];
    const recs = decode(encodeSpec(task, ID, HOST));
    const conf = only(recs, TAG.SC_CONF);
    expect(conf.length).toBe(16);
    expect(conf.readUInt32LE(0)).toBe(1);
    expect(conf.readUInt32LE(4)).toBe(0);
    expect(conf.readBigUInt64LE(8)).toBe((1n << 1n) | (1n << 2n) | (1n << 10n) | (1n << 45n));
    expect(strings(recs, TAG.SC_ALLOW)).toEqual(['read', 'write', 'exit_group']);
    const files = payloads(recs, TAG.BROKER_FILE).map((p) => {
      const [path, source] = split2(p.subarray(4));
      return { flags: p.readUInt32LE(0), path, source: source.toString('utf8') };
    });
    expect(files).toEqual([{ flags: 0, path: '/etc/ssl/cert.pem', source: '/etc/ssl/certs/ca-certificates.crt' }]);
  });
});

describe('encodeSpec network', () => {
  it('writes no NETNS or RESOLV record for a sandbox without a network', () => {
    const recs = decode(encodeSpec(makeTask(), ID, HOST));
    expect(payloads(recs, TAG.NETNS)).toEqual([]);
    expect(payloads(recs, TAG.RESOLV)).toEqual([]);
  });

  it('writes the netns path and resolv.conf content as strings when given', () => {
    const net = { netnsPath: '/run/zviz/netns/sb-1', resolvConf: 'nameserver 10.0.0.53\n' };
    const recs = decode(encodeSpec(makeTask(), ID, HOST, net));
    expect(strings(recs, TAG.NETNS)).toEqual([net.netnsPath]);
    expect(strings(recs, TAG.RESOLV)).toEqual([net.resolvConf]);
  });
});

describe('encodeGo', () => {
  it('uses only GO tags that native/src/internal.h defines, with the same numbers', () => {
    const header = readFileSync(INTERNAL_H, 'utf8');
    const native = new Map<string, number>();
    for (const m of header.matchAll(/^\s*ZV_G_([A-Z0-9_]+)\s*=\s*(\d+)\s*,/gm)) native.set(m[1]!, Number(m[2]));
    expect(Object.fromEntries(native)).toEqual({ ...GO_TAG });
  });

  it('asks for the answer at fd 4 only with work for a runtime that answers there', () => {
    const warm = (answerOnReply: boolean): SandboxTask['warm'] => ({
      key: 'fn:t:f:1:default',
      template: { argv: ['/usr/bin/node'], env: {}, files: [] },
      control: '{}',
      handler: true,
      answerOnReply,
    });
    const tags = (buf: Buffer) => decode(buf).map((r) => r.tag);
    expect(tags(encodeGo(makeTask({ warm: warm(true) }), Buffer.from('{}')))).toContain(GO_TAG.ANSWER);
    expect(payloads(decode(encodeGo(makeTask({ warm: warm(true) }), Buffer.from('{}'))), GO_TAG.ANSWER)).toEqual([Buffer.alloc(0)]);
    // Without work for a bootstrap on fd 3 there is no answer on fd 4 to wait for; bash answers on stdout.
    expect(tags(encodeGo(makeTask({ warm: warm(true) }), null))).not.toContain(GO_TAG.ANSWER);
    expect(tags(encodeGo(makeTask({ warm: warm(false) }), Buffer.from('{}')))).not.toContain(GO_TAG.ANSWER);
  });

  it("streams a job's output as a LOG with its u64 volume limit instead of STREAM, and plain output as before", () => {
    const tags = (buf: Buffer) => decode(buf).map((r) => r.tag);
    const fiveGiB = 5 * 1024 * 1024 * 1024;
    const log = decode(encodeGo({ ...makeTask(), logBytes: fiveGiB }, null, true));
    expect(log.map((r) => r.tag)).not.toContain(GO_TAG.STREAM);
    expect(payloads(log, GO_TAG.LOG).map((p) => p.readBigUInt64LE(0))).toEqual([BigInt(fiveGiB)]);
    expect(tags(encodeGo(makeTask(), null, true))).toContain(GO_TAG.STREAM);
    expect(tags(encodeGo(makeTask(), null, true))).not.toContain(GO_TAG.LOG);
    expect(tags(encodeGo(makeTask(), null, false))).not.toContain(GO_TAG.STREAM);
  });
});
