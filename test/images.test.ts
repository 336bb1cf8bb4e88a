// OCI images as sandbox roots, end to end and offline: test images written byte by byte
// (test/support/oci-images.ts), imported with skopeo and unpacked with umoci into a real
// store, pulled through Debian's docker-registry on loopback (with and without htpasswd
// auth), and run as sandbox roots — where the layer suites' key properties (hidden host,
// read-only root, Landlock, seccomp) must hold too.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageError, ImageStore, sweepImages, type ImageStoreOptions } from '../worker-pool/images/store.js';
import { busyboxLayer, writeOciLayout, type TarEntry } from './support/oci-images.js';
import { registryAvailable, startRegistry, type LocalRegistry } from './support/registry.js';
import { privilegedReason, repoRoot, startServer, type RunningServer } from './support/server.js';
import { sleep } from './support/wait.js';

const SUPERVISOR = join(repoRoot, 'native', 'build', 'zviz-supervisor');
const CLI = join(repoRoot, 'dist', 'server', 'cli', 'main.js');
const tools = ['skopeo', 'umoci'].filter((t) => spawnSync(t, ['--version']).status !== 0);
const skip = privilegedReason() ?? (tools.length > 0 ? `${tools.join(', ')} not installed` : null) ?? registryAvailable();

let work: string;
const fixtures = {} as Record<'busybox' | 'layered' | 'tooling', string>;

function store(dir: string, over: Partial<ImageStoreOptions> = {}): ImageStore {
  return new ImageStore({
    dir,
    registries: [],
    insecureRegistries: [],
    authFile: null,
    maxImageMb: 512,
    maxLayers: 16,
    cacheMb: 10_240,
    supervisor: SUPERVISOR,
    ...over,
  });
}

async function refused(p: Promise<unknown>): Promise<ImageError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(ImageError);
  return e as ImageError;
}

/** Leftovers a finished or failed pull must not leave: staging folders, locks, unfinished images. */
function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.startsWith('.') || !existsSync(join(dir, n, 'image.json')));
}

function layout(name: string, layers: ReadonlyArray<readonly TarEntry[]>, config = {}): string {
  const dir = join(work, name);
  writeOciLayout(dir, 'latest', layers, config);
  return dir;
}

beforeAll(() => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'zviz-images-'));
  chmodSync(work, 0o755);
  fixtures.busybox = layout('busybox', [busyboxLayer()], {
    Env: ['PATH=/bin', 'GREETING=from-image'],
    WorkingDir: '/home/app',
    User: 'app',
    Cmd: ['/bin/sh', '-c', 'echo default-cmd'],
  });
  // Layer 2 deletes a file of layer 1 (whiteout) and replaces a directory's contents (opaque).
  fixtures.layered = layout('layered', [
    [...busyboxLayer(), { type: 'dir', name: 'data/' }, { type: 'file', name: 'data/old', content: 'old' }, { type: 'file', name: 'gone.txt', content: 'x' }],
    [{ type: 'file', name: '.wh.gone.txt' }, { type: 'dir', name: 'data/' }, { type: 'file', name: 'data/.wh..wh..opq' }, { type: 'file', name: 'data/new', content: 'new' }],
  ]);
  // busybox plus a static try-syscall for the invalid-argument technique.
  const tryBin = join(work, 'try-syscall');
  const cc = spawnSync('gcc', ['-static', '-O1', '-o', tryBin, join(repoRoot, 'test', 'support', 'try-syscall.c')]);
  if (cc.status !== 0) throw new Error(`cannot build try-syscall: ${cc.stderr.toString()}`);
  fixtures.tooling = layout('tooling', [busyboxLayer(), [{ type: 'file', name: 'bin/try-syscall', content: readFileSync(tryBin), mode: 0o755 }]], {
    Env: ['PATH=/bin'],
  });
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.skipIf(skip !== null)('image store (skopeo + umoci, real files)', () => {
  it('imports an OCI layout once per digest: config resolved, tree sanitized, nothing half-written left', async () => {
    const dir = join(work, 'store-basic');
    const s = store(dir);
    const r = await s.pull(`oci:${fixtures.busybox}:latest`);
    expect(r.digest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(r.config).toMatchObject({ workingDir: '/home/app', user: { uid: 1001, gid: 1001 }, cmd: ['/bin/sh', '-c', 'echo default-cmd'] });
    expect(r.config.env).toContain('GREETING=from-image');
    const root = s.rootfs(r.digest);
    // The image's owners are kept (idmapped into the sandbox), the mount points exist.
    expect(statSync(join(root, 'home/app/secret.txt')).uid).toBe(1001);
    for (const p of ['proc', 'dev', 'tmp', 'fn']) expect(statSync(join(root, p)).isDirectory()).toBe(true);
    for (const p of ['etc/hosts', 'etc/hostname', 'etc/resolv.conf']) expect(lstatSync(join(root, p)).isFile()).toBe(true);
    const ino = statSync(root).ino;
    const again = await s.pull(`oci:${fixtures.busybox}`);
    expect(again.digest).toBe(r.digest);
    expect(statSync(root).ino).toBe(ino);
    expect(again.references).toEqual([`oci:${fixtures.busybox}:latest`, `oci:${fixtures.busybox}`]);
    expect(leftovers(dir)).toEqual([]);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  it('concurrent pulls of one digest from three stores (one folder) unpack it once', async () => {
    const dir = join(work, 'store-concurrent');
    const got = await Promise.all([store(dir), store(dir), store(dir)].map((s) => s.pull(`oci:${fixtures.busybox}:latest`)));
    expect(new Set(got.map((r) => r.digest)).size).toBe(1);
    expect(readdirSync(dir).filter((n) => n.startsWith('sha256-'))).toHaveLength(1);
    expect(leftovers(dir)).toEqual([]);
  });

  it('honours whiteouts and opaque directories across layers', async () => {
    const s = store(join(work, 'store-layered'));
    const r = await s.pull(`oci:${fixtures.layered}:latest`);
    const root = s.rootfs(r.digest);
    expect(existsSync(join(root, 'gone.txt'))).toBe(false);
    expect(readdirSync(join(root, 'data'))).toEqual(['new']);
    expect(r.layers).toBe(2);
  });

  const base: TarEntry[] = [{ type: 'dir', name: 'etc/' }, { type: 'file', name: 'etc/passwd', content: 'root:x:0:0::/:/bin/sh\n' }];
  const hostile: Array<[string, (outside: string) => ReadonlyArray<readonly TarEntry[]>]> = [
    ['a ../ entry', (o) => [[...base, { type: 'file', name: `../../../../../..${o}/dotdot`, content: 'x' }]]],
    ['an absolute path', (o) => [[...base, { type: 'file', name: `${o}/abs`, content: 'x' }]]],
    ['a symlink out, then a write through it (one layer)', (o) => [[...base, { type: 'symlink', name: 'lnk', target: o }, { type: 'file', name: 'lnk/pwned', content: 'x' }]]],
    ['a symlink out, then a write through it (next layer)', (o) => [[...base, { type: 'symlink', name: 'lnk', target: o }], [{ type: 'file', name: 'lnk/pwned', content: 'x' }]]],
    ['a hard link to /etc/shadow', () => [[...base, { type: 'hardlink', name: 'shadow', target: '/etc/shadow' }]]],
    ['a hard link to ../../etc/shadow', () => [[...base, { type: 'hardlink', name: 'shadow', target: '../../../../../../etc/shadow' }]]],
    ['device nodes', () => [[...base, { type: 'char', name: 'mem', major: 1, minor: 1 }, { type: 'block', name: 'sda', major: 8, minor: 0 }]]],
    ['a setuid and setgid binary', () => [[...base, { type: 'file', name: 'su', content: '#!/bin/sh\n', mode: 0o6755 }]]],
  ];
  it.each(hostile)('a hostile image with %s is refused or neutralised', async (_name, layers) => {
    const outside = mkdtempSync(join(work, 'outside-'));
    const shadowLinks = statSync('/etc/shadow').nlink;
    const dir = join(work, `store-hostile-${readdirSync(work).length}`);
    const s = store(dir);
    const src = layout(`hostile-${readdirSync(work).length}`, layers(outside));
    const result = await s.pull(`oci:${src}:latest`).then(
      (r) => r,
      (e: unknown) => e,
    );
    // Nothing outside the store changed, whatever the outcome.
    expect(readdirSync(outside)).toEqual([]);
    expect(statSync('/etc/shadow').nlink).toBe(shadowLinks);
    if (result instanceof ImageError) {
      expect(result.code).toBe('IMAGE_INVALID');
      expect(readdirSync(dir)).toEqual([]);
      return;
    }
    expect(result).not.toBeInstanceOf(Error);
    const root = s.rootfs((result as { digest: string }).digest);
    const walk = (d: string): string[] => readdirSync(d).flatMap((n) => {
      const p = join(d, n);
      const st = lstatSync(p);
      return st.isDirectory() ? [p, ...walk(p)] : [p];
    });
    for (const p of walk(root)) {
      const st = lstatSync(p);
      expect(st.isCharacterDevice() || st.isBlockDevice(), `${p} is a device`).toBe(false);
      expect(st.mode & 0o6000, `${p} keeps setuid/setgid`).toBe(0);
      if (st.isFile()) expect(st.nlink === 1 || !p.endsWith('shadow'), `${p} links out`).toBe(true);
    }
  });

  it('imports an OCI archive and a docker-save tarball', async () => {
    const s = store(join(work, 'store-archives'));
    const ociTar = join(work, 'busybox-oci.tar');
    expect(spawnSync('tar', ['-C', fixtures.busybox, '-cf', ociTar, '.']).status).toBe(0);
    const a = await s.pull(`oci-archive:${ociTar}`);
    const dockerTar = join(work, 'busybox-docker.tar');
    const save = spawnSync('skopeo', ['copy', '-q', `oci:${fixtures.busybox}:latest`, `docker-archive:${dockerTar}:busybox:latest`]);
    expect(save.stderr.toString()).toBe('');
    const d = await s.pull(`docker-archive:${dockerTar}`);
    expect(existsSync(join(s.rootfs(a.digest), 'bin', 'busybox'))).toBe(true);
    expect(existsSync(join(s.rootfs(d.digest), 'bin', 'busybox'))).toBe(true);
    expect(d.config.workingDir).toBe('/home/app');
  });

  it('refuses images over the layer and size caps (IMAGE_TOO_LARGE) and leaves nothing', async () => {
    const dir = join(work, 'store-caps');
    expect((await refused(store(dir, { maxLayers: 1 }).pull(`oci:${fixtures.layered}:latest`))).code).toBe('IMAGE_TOO_LARGE');
    // busybox is ~1 MiB compressed, ~2 MiB unpacked
    expect((await refused(store(dir, { maxImageMb: 1 }).pull(`oci:${fixtures.busybox}:latest`))).code).toBe('IMAGE_TOO_LARGE');
    expect(leftovers(dir)).toEqual([]);
  });

  it('refuses bad references and unknown local images with their codes', async () => {
    const s = store(join(work, 'store-refs'));
    expect((await refused(s.pull('oci:relative/path'))).code).toBe('INVALID_REFERENCE');
    expect((await refused(s.pull('Not A Ref'))).code).toBe('INVALID_REFERENCE');
    expect((await refused(s.pull(`oci:${join(work, 'missing')}:latest`))).code).toBe('IMAGE_NOT_FOUND');
    expect((await refused(s.pull('registry.example/x:1'))).code).toBe('REGISTRY_NOT_ALLOWED');
    expect(() => s.resolve('sha256:' + 'f'.repeat(64))).toThrow(ImageError);
  });

  it("the start-up sweep removes a dead pull's staging, a dead lock and an image without its record, never a live pull's", () => {
    const dir = join(work, 'store-sweep');
    mkdirSync(dir, { recursive: true });
    const dead = 2 ** 22 + 12345; // above pid_max's default: never a live pid
    mkdirSync(join(dir, `.tmp-${dead}-abc`));
    mkdirSync(join(dir, `.tmp-${process.pid}-live`));
    mkdirSync(join(dir, `.lock-sha256-${'a'.repeat(64)}`));
    writeFileSync(join(dir, `.lock-sha256-${'a'.repeat(64)}`, 'pid'), String(dead));
    mkdirSync(join(dir, `sha256-${'b'.repeat(64)}`, 'rootfs'), { recursive: true });
    const removed = sweepImages(dir, (pid) => pid === process.pid);
    expect(removed.sort()).toEqual([`.lock-sha256-${'a'.repeat(64)}`, `.tmp-${dead}-abc`, `sha256-${'b'.repeat(64)}`].sort());
    expect(readdirSync(dir)).toEqual([`.tmp-${process.pid}-live`]);
  });
});

describe.skipIf(skip !== null)('pulls through docker-registry on loopback', () => {
  let open: LocalRegistry;
  let locked: LocalRegistry;
  const secret = `pw-${Math.random().toString(36).slice(2)}`;

  beforeAll(async () => {
    open = await startRegistry();
    locked = await startRegistry({ user: 'zviz', password: secret });
    const push = (reg: string, creds: string[]) =>
      spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', ...creds, `oci:${fixtures.busybox}:latest`, `docker://${reg}/tools/busybox:1`]);
    expect(push(open.host, []).stderr.toString()).toBe('');
    expect(push(locked.host, ['--dest-creds', `zviz:${secret}`]).stderr.toString()).toBe('');
  }, 60_000);
  afterAll(async () => {
    await open?.stop();
    await locked?.stop();
  });

  const regStore = (dir: string, reg: LocalRegistry, over: Partial<ImageStoreOptions> = {}) =>
    store(join(work, dir), { registries: [reg.host], insecureRegistries: [reg.host], ...over });

  it('pulls a tag, pins it to its digest, and finds it again by the pinned name', async () => {
    const s = regStore('reg-pull', open);
    const r = await s.pull(`${open.host}/tools/busybox:1`);
    expect(r.origin).toBe('registry');
    expect(r.pinned).toBe(`${open.host}/tools/busybox@${r.digest}`);
    expect(s.get(r.pinned!)?.digest).toBe(r.digest);
    const byDigest = await s.pull(r.pinned!);
    expect(byDigest.digest).toBe(r.digest);
  });

  it('collects registry images beyond ZVIZ_IMAGE_CACHE_MB, least recently used first, never one in use or just pulled', async () => {
    expect(spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${fixtures.layered}:latest`, `docker://${open.host}/tools/layered:1`]).status).toBe(0);
    const s = regStore('reg-gc', open, { cacheMb: 0, pinned: async () => new Set() });
    const evicted: string[] = [];
    s.onEvict((r) => evicted.push(r.digest));
    const a = await s.pull(`${open.host}/tools/busybox:1`);
    expect(s.get(a.digest)).not.toBeNull(); // the one just pulled stays, even over the budget
    const release = s.acquire(a.digest);
    const b = await s.pull(`${open.host}/tools/layered:1`);
    expect(s.list().map((r) => r.digest).sort()).toEqual([a.digest, b.digest].sort()); // a is in use
    release();
    expect((await s.gc()).removed).toEqual([a.digest, b.digest]); // least recently used first
    expect(s.list()).toEqual([]);
    expect(evicted).toEqual([a.digest, b.digest]); // what the server audits
  });

  it('never collects a pinned image, even when pinned images alone exceed the budget; an unreadable pinned set collects nothing', async () => {
    expect(spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${fixtures.tooling}:latest`, `docker://${open.host}/tools/tooling:1`]).status).toBe(0);
    const pins = new Set<string>();
    let readable = true;
    const pinned = async () => {
      if (!readable) throw new Error('redis down');
      return pins;
    };
    const s = regStore('reg-gc-pinned', open, { cacheMb: 0, pinned });
    const a = await s.pull(`${open.host}/tools/busybox:1`);
    pins.add(a.digest);
    const b = await s.pull(`${open.host}/tools/layered:1`); // a is pinned, b just pulled: both stay
    expect(s.list().map((r) => r.digest).sort()).toEqual([a.digest, b.digest].sort());
    readable = false;
    const blind = await s.gc();
    expect(blind).toMatchObject({ removed: [], error: 'redis down' });
    readable = true;
    const outcomes: number[] = [];
    s.onCollected((o) => outcomes.push(o.pinnedBytes));
    const c = await s.pull(`${open.host}/tools/tooling:1`); // collects b, never a
    expect(s.list().map((r) => r.digest).sort()).toEqual([a.digest, c.digest].sort());
    const after = await s.gc();
    expect(after.removed).toEqual([c.digest]);
    expect(after).toMatchObject({ bytes: a.sizeBytes, pinnedBytes: a.sizeBytes, budgetBytes: 0, error: null });
    expect(outcomes).toEqual([a.sizeBytes, a.sizeBytes]);
    // The command line's store cannot ask the function store: it collects nothing.
    expect((await regStore('reg-gc-pinned', open, { cacheMb: 0 }).gc()).removed).toEqual([]);
    expect(s.get(a.digest)).not.toBeNull();
  });

  it('refuses a registry outside the allowlist (REGISTRY_NOT_ALLOWED) without contacting it', async () => {
    const s = regStore('reg-deny', open, { registries: ['other.example'] });
    expect((await refused(s.pull(`${open.host}/tools/busybox:1`))).code).toBe('REGISTRY_NOT_ALLOWED');
  });

  it('an unreachable registry is REGISTRY_UNAVAILABLE; an unknown tag IMAGE_NOT_FOUND', async () => {
    const gone = { ...open, host: '127.0.0.1:1' };
    expect((await refused(regStore('reg-gone', gone).pull('127.0.0.1:1/tools/busybox:1'))).code).toBe('REGISTRY_UNAVAILABLE');
    expect((await refused(regStore('reg-unknown', open).pull(`${open.host}/tools/busybox:nope`))).code).toBe('IMAGE_NOT_FOUND');
  });

  it('a corrupt blob in the registry is refused and nothing is stored', async () => {
    const reg = await startRegistry();
    try {
      expect(spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${fixtures.layered}:latest`, `docker://${reg.host}/c/img:1`]).status).toBe(0);
      // Flip bytes of the largest blob (a layer): its content no longer matches its digest.
      const blobs = join(reg.storage, 'docker/registry/v2/blobs/sha256');
      const files = readdirSync(blobs).flatMap((p) => readdirSync(join(blobs, p)).map((h) => join(blobs, p, h, 'data')));
      const biggest = files.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
      const buf = readFileSync(biggest);
      buf.fill(0x41, 100, 4000);
      writeFileSync(biggest, buf);
      const dir = join(work, 'reg-corrupt');
      const e = await refused(store(dir, { registries: [reg.host], insecureRegistries: [reg.host] }).pull(`${reg.host}/c/img:1`));
      expect(e.code).toBe('IMAGE_INVALID');
      expect(leftovers(dir)).toEqual([]);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      await reg.stop();
    }
  });

  it('with htpasswd auth: refused without credentials, pulled with the operator auth file, the password in no message', async () => {
    const noAuth = await refused(regStore('reg-auth-none', locked).pull(`${locked.host}/tools/busybox:1`));
    expect(noAuth.code).toBe('REGISTRY_UNAVAILABLE');
    expect(noAuth.message).not.toContain(secret);
    const authFile = join(work, 'auth.json');
    writeFileSync(authFile, JSON.stringify({ auths: { [locked.host]: { auth: Buffer.from(`zviz:${secret}`).toString('base64') } } }), { mode: 0o600 });
    const s = regStore('reg-auth', locked, { authFile });
    const r = await s.pull(`${locked.host}/tools/busybox:1`);
    expect(JSON.stringify(r)).not.toContain(secret);
    const bad = await refused(s.pull(`${locked.host}/tools/busybox:nope`));
    expect(bad.message).not.toContain(secret);
  });
});

/** `zviz run --image` on a private state directory: one sandbox rooted in the image. */
function runIn(stateDir: string, image: string, cmd: string[], extra: string[] = []): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('node', [CLI, 'run', '--image', image, '--no-stdin', ...extra, '--', ...cmd], {
    env: { ...process.env, ZVIZ_STATE_DIR: stateDir },
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describe.skipIf(skip !== null)('a sandbox rooted in an image (zviz run --image)', () => {
  let state: string;
  let digest: string;
  beforeAll(async () => {
    state = join(work, 'state-run');
    const s = store(join(state, 'images'));
    digest = (await s.pull(`oci:${fixtures.tooling}:latest`)).digest;
    await s.pull(`oci:${fixtures.busybox}:latest`);
  }, 60_000);

  it("honours the image's Env, WorkingDir, User (its files are the function's) and Cmd", () => {
    const r = runIn(state, `oci:${fixtures.busybox}:latest`, ['sh', '-c', 'echo "$GREETING $(pwd) $(id -u)"; cat /home/app/secret.txt; stat -c "%u %U" /bin/busybox']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('from-image /home/app 1000\napp-only\n0 root\n');
    expect(r.status).toBe(0);
  });

  it('zviz image import and rm: the store changes and each is a record in the audit file', () => {
    const cli = (...args: string[]) => spawnSync('node', [CLI, 'image', ...args], { env: { ...process.env, ZVIZ_STATE_DIR: state }, timeout: 60_000 });
    const imported = cli('import', `oci:${fixtures.layered}:latest`);
    expect(imported.stderr.toString()).not.toContain('zviz:');
    const digest = imported.stdout.toString().trim();
    expect(digest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(cli('rm', digest).stdout.toString()).toBe(`removed ${digest}\n`);
    const refused = cli('pull', 'registry.example/x:1');
    expect(refused.status).not.toBe(0);
    const records = readFileSync(join(state, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.slice(-3).map((r) => [r.type, r.tenant, r.action, r.outcome, r.digest, r.code])).toEqual([
      ['image', null, 'image.pull', 'stored', digest, null],
      ['image', null, 'image.remove', 'removed', digest, null],
      ['image', null, 'image.pull', 'failed', null, 'REGISTRY_NOT_ALLOWED'],
    ]);
  });

  it("a root image is idmapped with the sandbox's own user namespace: its root's files are root's, not the overflow id", () => {
    // Its owner is the function's 1000, so no helper namespace is made (native/src/mnt.c).
    const r = runIn(state, digest, ['sh', '-c', 'stat -c "%u %U" /bin/busybox; id -u']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('0 root\n1000\n');
  });

  it('the root is read-only and the host is hidden: no /usr of the host, no store, ZViz-written /etc/hosts and hostname', () => {
    const r = runIn(state, digest, [
      'sh',
      '-c',
      'touch /x 2>&1; touch /bin/x 2>&1; ls /usr/bin/node 2>&1; ls /run/zviz 2>&1; ls /var/lib 2>&1; cat /etc/hostname; cat /etc/hosts | head -1; echo ok > /tmp/t && cat /tmp/t',
    ]);
    expect(r.stdout).toContain("touch: /x: Read-only file system");
    expect(r.stdout).toContain("touch: /bin/x: Read-only file system");
    expect(r.stdout).toContain('/usr/bin/node: No such file or directory');
    expect(r.stdout).toContain('/run/zviz: No such file or directory');
    expect(r.stdout).toContain('/var/lib: No such file or directory');
    expect(r.stdout).toContain('zviz\n127.0.0.1\tlocalhost zviz\nok\n');
    expect(r.status).toBe(0);
  });

  it('Landlock holds: /proc is readable but not writable, though its mount is', () => {
    // Without Landlock a process may rename itself through its own comm file.
    const r = runIn(state, digest, ['sh', '-c', 'head -c 64 /proc/self/status | head -1; (echo renamed > /proc/self/comm) 2>&1; cat /proc/self/comm']);
    expect(r.stdout).toMatch(/^Name:\thead\n.*Permission denied\ncat\n$/s);
  });

  it('seccomp holds (invalid-argument technique): mount and unshare are denied, getpid runs', () => {
    // x86_64: mount 165 with bad pointers fails EFAULT when unfiltered; unshare 272.
    const r = runIn(state, digest, ['sh', '-c', 'try-syscall 165 1 1 1 0 0; try-syscall 272 0x10000000; try-syscall 39']);
    const [mount, unshare, getpid] = r.stdout.trim().split('\n');
    expect(mount).toBe('errno 1');
    expect(unshare).toBe('errno 1');
    expect(getpid).toMatch(/^ok \d+$/);
  });

  it('an unknown image is a clear failure, naming it', () => {
    const r = runIn(join(work, 'state-empty'), 'sha256:' + 'e'.repeat(64), ['true']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('sha256:eeee');
  });
});

describe.skipIf(skip !== null)('the image API', () => {
  let server: RunningServer;
  let reg: LocalRegistry;
  beforeAll(async () => {
    reg = await startRegistry();
    expect(spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${fixtures.busybox}:latest`, `docker://${reg.host}/tools/busybox:1`]).status).toBe(0);
    server = await startServer({ env: { ZVIZ_IMAGE_REGISTRIES: reg.host, ZVIZ_IMAGE_INSECURE_REGISTRIES: reg.host } });
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await reg?.stop();
  });

  it('POST /admin/images answers 202 with a status resource, then the image is listed and runs from /invoke', async () => {
    const started = await server.request('/admin/images', { body: { reference: `${reg.host}/tools/busybox:1` }, auth: 'admin' });
    expect(started.status).toBe(202);
    const location = started.headers.get('location')!;
    let pull = started.body;
    for (let i = 0; i < 200 && pull.status === 'pulling'; i++) {
      await sleep(100);
      pull = (await server.request(location, { auth: 'admin' })).body;
    }
    expect(pull.status).toBe('done');
    const digest: string = pull.image.digest;
    const again = await server.request('/admin/images', { body: { reference: `${reg.host}/tools/busybox:1` }, auth: 'admin' });
    expect(again.status).toBe(200);
    const list = await server.request('/images');
    expect(list.body.images.map((i: { digest: string }) => i.digest)).toEqual([digest]);
    const run = await server.invoke({ image: digest, command: ['sh', '-c', 'echo "$GREETING" && id -u'] });
    expect(run).toMatchObject({ status: 'ok', stdout: 'from-image\n1000\n' });
    const byTag = await server.invoke({ image: `${reg.host}/tools/busybox:1` });
    expect(byTag.stdout).toBe('default-cmd\n');
    // A function deployed from a tag is pinned to the digest; the event arrives on stdin, stdout is its output.
    const deployed = await server.request('/functions/echo-image', {
      method: 'PUT',
      body: { image: `${reg.host}/tools/busybox:1`, command: ['sh', '-c', `read -r x; printf '{"got":%s,"user":%s}' "$x" "$(id -u)"`] },
    });
    expect(deployed.status).toBe(201);
    expect(deployed.body.function ?? deployed.body).toMatchObject({ image: { digest, reference: `${reg.host}/tools/busybox:1` } });
    const fnRun = await server.invoke({ function: 'echo-image', input: { a: 1 } });
    expect(fnRun).toMatchObject({ status: 'ok', output: { got: { a: 1 }, user: 1000 } });
    const gone = await server.request(`/admin/images/${digest}`, { method: 'DELETE', auth: 'admin' });
    expect(gone.status).toBe(200);
    // An inline run names what the store has: the image is gone.
    const missing = await server.request('/invoke', { body: { image: digest, command: ['true'] } });
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('IMAGE_NOT_FOUND');
    // A pinned function fetches its digest from the registry again, as a host of a fleet that never saw it would.
    const refetched = await server.invoke({ function: 'echo-image', input: { b: 2 } });
    expect(refetched).toMatchObject({ status: 'ok', output: { got: { b: 2 }, user: 1000 } });
    const pinned = `${reg.host}/tools/busybox@${digest}`;
    expect((await server.request('/images')).body.images.map((i: { references: string[] }) => i.references)).toEqual([[pinned]]);
    // Each admin action is an audit record without a tenant, and nothing else is in it.
    const records = (await imageAudit()).filter((r) => r.digest === digest);
    expect(records.map((r) => [r.action, r.outcome, r.reference])).toEqual([
      ['image.pull', 'stored', pinned],
      ['image.remove', 'removed', null],
      ['image.pull', 'already stored', `${reg.host}/tools/busybox:1`],
      ['image.pull', 'stored', `${reg.host}/tools/busybox:1`],
    ]);
    for (const r of records) expect(Object.keys(r).sort()).toEqual(['action', 'code', 'digest', 'id', 'outcome', 'reference', 'remote', 'tenant', 'time', 'type']);
  });

  /** The image records of GET /admin/audit, newest first. */
  async function imageAudit(): Promise<Array<Record<string, unknown>>> {
    const page = await server.request('/admin/audit?limit=1000', { auth: 'admin' });
    expect(page.status).toBe(200);
    return (page.body.records as Array<Record<string, unknown>>).filter((r) => r.type === 'image');
  }

  it('answers the error table: not allowlisted 403, unreachable 502, unknown 404, bad reference 400, second delete 404', async () => {
    const cases: Array<[string, number, string]> = [
      ['registry.example/x:1', 403, 'REGISTRY_NOT_ALLOWED'],
      [`${reg.host}/tools/nothing:1`, 404, 'IMAGE_NOT_FOUND'],
      ['oci:relative', 400, 'INVALID_IMAGE_REFERENCE'],
    ];
    for (const [reference, status, code] of cases) {
      const r = await server.request('/admin/images', { body: { reference }, auth: 'admin' });
      expect([reference, r.status, r.body.error?.code]).toEqual([reference, status, code]);
    }
    const failed = await imageAudit();
    for (const [reference, , code] of cases) {
      expect(failed.find((r) => r.reference === reference)).toMatchObject({ tenant: null, action: 'image.pull', outcome: 'failed', code, digest: null });
    }
    const del = await server.request(`/admin/images/sha256:${'d'.repeat(64)}`, { method: 'DELETE', auth: 'admin' });
    expect([del.status, del.body.error.code]).toEqual([404, 'IMAGE_NOT_FOUND']);
    const tenant = await server.request('/admin/images', { body: { reference: 'x' } });
    expect([401, 403]).toContain(tenant.status);
  });
});

describe.skipIf(skip !== null)('image GC on a server: images deployed functions pin stay', () => {
  let server: RunningServer;
  let reg: LocalRegistry;
  beforeAll(async () => {
    reg = await startRegistry();
    for (const [name, dir] of [['busybox', fixtures.busybox], ['layered', fixtures.layered], ['tooling', fixtures.tooling]] as const) {
      expect(spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${dir}:latest`, `docker://${reg.host}/gc/${name}:1`]).status).toBe(0);
    }
    // A budget of 0: every pull is over it, so every pull collects.
    server = await startServer({ env: { ZVIZ_IMAGE_REGISTRIES: reg.host, ZVIZ_IMAGE_INSECURE_REGISTRIES: reg.host, ZVIZ_IMAGE_CACHE_MB: '0' } });
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await reg?.stop();
  });

  async function pull(reference: string): Promise<string> {
    const started = await server.request('/admin/images', { body: { reference }, auth: 'admin' });
    expect([200, 202]).toContain(started.status);
    if (started.status === 200) return started.body.digest;
    let p = started.body;
    for (let i = 0; i < 300 && p.status === 'pulling'; i++) {
      await sleep(100);
      p = (await server.request(started.headers.get('location')!, { auth: 'admin' })).body;
    }
    expect(p.status).toBe('done');
    return p.image.digest;
  }

  const stored = async () => ((await server.request('/images')).body.images as Array<{ digest: string }>).map((i) => i.digest).sort();
  const pulls = async (digest: string) =>
    ((await server.request('/admin/audit?limit=1000', { auth: 'admin' })).body.records as Array<Record<string, unknown>>).filter(
      (r) => r.type === 'image' && r.action === 'image.pull' && r.outcome === 'stored' && r.digest === digest,
    ).length;

  it('fills the budget, deploys a function pinning A, pulls others: GC keeps A, which then runs without a pull, and the operator is warned', async () => {
    const a = await pull(`${reg.host}/gc/busybox:1`);
    const deployed = await server.request('/functions/pinned', { method: 'PUT', body: { image: `${reg.host}/gc/busybox:1`, command: ['sh', '-c', 'echo \'"pinned-ok"\''] } });
    expect(deployed.status).toBe(201);
    const b = await pull(`${reg.host}/gc/layered:1`);
    const c = await pull(`${reg.host}/gc/tooling:1`); // collects b (least recently used, not pinned), never a
    expect(await stored()).toEqual([a, c].sort());
    expect(await stored()).not.toContain(b);
    const before = await pulls(a);
    expect(before).toBe(1);
    const ran = await server.invoke({ function: 'pinned', input: null });
    expect(ran).toMatchObject({ status: 'ok', output: 'pinned-ok' });
    expect(await pulls(a)).toBe(before); // run from the store, no pull
    const metrics = (await server.request('/metrics', { auth: 'admin' })).body as string;
    expect(metrics).toMatch(/zviz_image_store_bytes\{kind="pinned"\} [1-9]\d*/);
    expect(metrics).toMatch(/zviz_image_store_bytes\{kind="budget"\} 0/);
    expect(server.logs()).toContain('image store over ZVIZ_IMAGE_CACHE_MB: the images deployed functions pin alone exceed it');
    // Deleted, its image is no longer pinned: the next collection takes it.
    expect((await server.request('/functions/pinned', { method: 'DELETE' })).status).toBe(204);
    await pull(`${reg.host}/gc/layered:1`);
    expect(await stored()).not.toContain(a);
  });
});
