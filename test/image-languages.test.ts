// Privileged: catalog languages whose root is an OCI image, through POST /invoke on a real
// server. The test image is busybox plus a stand-in toolchain ("tiny": a compiler that is
// a shell script and whose programs are shell scripts), so the catalog's compile + run
// flow runs end to end, offline, in sandboxes rooted at the image: the image is imported on
// first use (an oci: layout the catalog names), compiled code runs from the run sandbox's
// /tmp, and a language whose image is missing, unpullable or lacks its programs is listed
// as unavailable with the reason and refused with a 4xx on use.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxLayer, writeOciLayout, type TarEntry } from './support/oci-images.js';
import { privilegedReason, startServer, type RunningServer } from './support/server.js';

const tools = ['skopeo', 'umoci'].filter((t) => spawnSync(t, ['--version']).status !== 0);
const skip = privilegedReason() ?? (tools.length > 0 ? `${tools.join(', ')} not installed` : null);

/** `tinyc -o OUT SRC`: a line starting `error` is a compile error; else OUT is SRC under a shebang. */
const TINYC = `#!/bin/sh
out=$2; src=$3
if grep -n '^error' "$src" >&2; then echo "$src: compile error: tiny refuses the line above" >&2; exit 1; fi
{ echo '#!/bin/sh'; cat "$src"; } > "$out"
echo "tinyc: compiled $src"
`;

const limits = { timeoutMs: 10000, memoryMb: 128, pids: 16, cpus: 1, outputBytes: 65536 };

function toolchainLayer(): TarEntry[] {
  const applets = ['grep', 'base64', 'chmod'];
  return [
    { type: 'dir', name: 'usr/' },
    { type: 'dir', name: 'usr/bin/' },
    ...applets.map((a): TarEntry => ({ type: 'hardlink', name: `usr/bin/${a}`, target: 'bin/busybox' })),
    { type: 'dir', name: 'usr/local/' },
    { type: 'dir', name: 'usr/local/bin/' },
    { type: 'file', name: 'usr/local/bin/tinyc', content: TINYC, mode: 0o755 },
    { type: 'file', name: 'etc/tiny-release', content: 'tiny 1.0 (test image)\n' },
  ];
}

describe.skipIf(skip !== null)('catalog languages rooted in an image (stand-in toolchain, oci: layout)', () => {
  let work: string;
  let s: RunningServer;
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'zviz-image-languages-'));
    chmodSync(work, 0o755);
    const image = join(work, 'tiny-image');
    writeOciLayout(image, 'latest', [busyboxLayer(), toolchainLayer()], { Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'TINY_HOME=/usr/local'] });
    const catalog = join(work, 'catalog');
    mkdirSync(catalog);
    const def = (name: string, over: Record<string, unknown>) =>
      writeFileSync(join(catalog, `${name}.json`), JSON.stringify({ name, version: '1.0', root: { image: `oci:${image}:latest` }, source: 'main.tiny', syscalls: 'image', ...over }));
    def('tiny', { compile: { argv: ['/usr/local/bin/tinyc', '-o', '{output}', '{source}'], limits }, run: { argv: ['{output}'] } });
    def('tinysh', { run: { argv: ['/bin/sh', '{source}'] } });
    def('broken', { compile: { argv: ['/usr/local/bin/nocc', '-o', '{output}', '{source}'], limits }, run: { argv: ['{output}'] } });
    def('far', { root: { image: 'registry.example/tiny:1' }, run: { argv: ['/bin/sh', '{source}'] } });
    s = await startServer({ env: { ZVIZ_RUNTIMES_DIR: catalog } });
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const runtime = async (name: string) => ((await s.request('/runtimes')).body.runtimes as Array<Record<string, unknown>>).find((r) => r.name === name);

  it('GET /runtimes lists them before any use: pullable, or unavailable with the reason', async () => {
    expect(await runtime('tiny')).toMatchObject({ status: 'pullable', compiled: true, root: { image: expect.stringMatching(/^oci:/) } });
    expect((await runtime('tiny'))!.profiles).toContain('default');
    const far = await runtime('far');
    expect(far).toMatchObject({ status: 'unavailable' });
    expect(far!.reason).toContain('registry registry.example is not in ZVIZ_IMAGE_REGISTRIES');
  });

  it('a tiny program compiles and runs in sandboxes rooted at the image (imported on first use), with stdin, args and the image Env', async () => {
    const code = 'read -r who; echo "hello $who $1 from $(cat /etc/tiny-release) home=$TINY_HOME uid=$(id -u)"; ls /usr/bin/node 2>&1 | head -1\n';
    const r = await s.request('/invoke', { method: 'POST', body: { runtime: 'tiny', code, stdin: 'Ada\n', args: ['x'] } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ status: 'ok', exitCode: 0 });
    // The image's files, not the host's: no /usr/bin/node there.
    expect(r.body.stdout).toBe('hello Ada x from tiny 1.0 (test image) home=/usr/local uid=1000\nls: /usr/bin/node: No such file or directory\n');
    expect(r.body.compile).toMatchObject({ status: 'ok', exitCode: 0 });
    const listed = await runtime('tiny');
    expect(listed).toMatchObject({ status: 'ready', digest: expect.stringMatching(/^sha256:[a-f0-9]{64}$/) });
    const images = (await s.request('/images')).body.images as Array<{ digest: string }>;
    expect(images.map((i) => i.digest)).toContain(listed!.digest);
  });

  it("a compile error is compile_error with the compiler's output; the code never runs", async () => {
    const r = await s.request('/invoke', { method: 'POST', body: { runtime: 'tiny', code: 'echo ran\nerror here\n' } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'compile_error', stdout: '' });
    expect(r.body.stderr).toContain('2:error here');
    expect(r.body.stderr).toContain('compile error: tiny refuses the line above');
  });

  it('an interpreted language of the image runs its source directly', async () => {
    const r = await s.invoke({ runtime: 'tinysh', code: 'echo "$0 $(cat /etc/tiny-release)"' });
    expect(r).toMatchObject({ status: 'ok', stdout: '/fn/main.tiny tiny 1.0 (test image)\n' });
  });

  it('a language whose image lacks its compiler, or whose registry is not allowed, is listed unavailable and refused with a 4xx naming why', async () => {
    const broken = await s.request('/invoke', { method: 'POST', body: { runtime: 'broken', code: 'echo x' } });
    expect([broken.status, broken.body.error.code]).toEqual([422, 'IMAGE_INVALID']);
    expect(broken.body.error.message).toContain('lacks /usr/local/bin/nocc');
    expect(await runtime('broken')).toMatchObject({ status: 'unavailable', reason: expect.stringContaining('lacks /usr/local/bin/nocc') });
    const far = await s.request('/invoke', { method: 'POST', body: { runtime: 'far', code: 'echo x' } });
    expect([far.status, far.body.error.code]).toEqual([403, 'REGISTRY_NOT_ALLOWED']);
    expect(far.body.error.message).toContain('Cannot run far code: its image registry.example/tiny:1 is not in this host');
  });
});
