// Privileged: function bundles end to end. An archive is streamed to POST /uploads,
// deployed with PUT /functions/:name { bundle }, unpacked once and mounted read-only on /fn:
// a node function loads a package from its node_modules, a python function imports a
// vendored package. Hostile archives are refused naming the entry; an upload over the cap
// is 413 with nothing left behind. Two servers share one Redis and a local S3-compatible
// store (s3rver on 127.0.0.1): the second, with an empty state directory and bundle cache,
// fetches the bundle from the store and runs it.
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tarGz, zipArchive } from './support/archives.js';
import { rawFetch } from './support/compat-auth.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { privilegedReason, repoRoot, startServer, type RunningServer } from './support/server.js';

const MAX_UPLOAD_MB = 1;

async function upload(s: RunningServer, body: Buffer | ReadableStream<Uint8Array>, key = s.apiKey!): Promise<{ status: number; body: any; headers: Headers }> {
  const r = await rawFetch(`${s.url}/uploads`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
    body,
    ...(body instanceof Buffer ? {} : { duplex: 'half' }),
  } as RequestInit);
  return { status: r.status, body: await r.json(), headers: r.headers };
}

function runCli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(repoRoot, 'dist', 'server', 'cli', 'main.js'), ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
    );
  });
}

const NODE_BUNDLE = tarGz([
  { name: 'main.js', content: "const pad = require('tiny-pad');\nmodule.exports = async (event) => ({ padded: pad(event.s, 6), from: require.resolve('tiny-pad') });\n" },
  { name: 'node_modules/tiny-pad/package.json', content: '{"name":"tiny-pad","version":"1.0.0","main":"index.js"}' },
  { name: 'node_modules/tiny-pad/index.js', content: "module.exports = (s, n) => '.'.repeat(Math.max(0, n - s.length)) + s;\n" },
  { name: 'node_modules/.bin/tiny-pad', type: 'symlink', linkname: '../tiny-pad/index.js' },
]);

const PYTHON_BUNDLE = zipArchive([
  { name: 'main.py', content: 'import shout\n\ndef handler(event, context):\n    return {"loud": shout.shout(event["s"]), "from": shout.__file__}\n' },
  { name: 'shout/', unixMode: 0o040755 },
  { name: 'shout/__init__.py', content: 'def shout(s):\n    return s.upper() + "!"\n' },
]);

describe.skipIf(privilegedReason() !== null)('function bundles on real servers, with a shared S3-compatible store', () => {
  let redis: TestRedis;
  let s3: S3rver;
  let s3Dir: string;
  let cacheA: string;
  let cacheB: string;
  let a: RunningServer;
  let s3Env: Record<string, string>;

  beforeAll(async () => {
    redis = await startRedis();
    s3Dir = mkdtempSync(join(tmpdir(), 'zviz-s3-'));
    s3 = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: s3Dir, configureBuckets: [{ name: 'zviz-bundles', configs: [] }] });
    const addr = (await s3.run()) as { port: number };
    s3Env = {
      ZVIZ_S3_ENDPOINT: `http://127.0.0.1:${addr.port}`,
      ZVIZ_S3_BUCKET: 'zviz-bundles',
      ZVIZ_S3_PREFIX: 'fleet/',
      ZVIZ_S3_ACCESS_KEY_ID: 'S3RVER',
      ZVIZ_S3_SECRET_ACCESS_KEY: 'S3RVER',
      ZVIZ_REDIS_URL: redis.url,
      ZVIZ_MAX_UPLOAD_MB: String(MAX_UPLOAD_MB),
    };
    // Each server its own bundle cache, searchable by the sandboxes' setup uid.
    cacheA = mkdtempSync(join(tmpdir(), 'zviz-bundles-a-'));
    cacheB = mkdtempSync(join(tmpdir(), 'zviz-bundles-b-'));
    chmodSync(cacheA, 0o711);
    chmodSync(cacheB, 0o711);
    a = await startServer({ env: { ...s3Env, ZVIZ_BUNDLE_CACHE_DIR: cacheA } });
  }, 60_000);

  afterAll(async () => {
    await a?.stop();
    await s3?.close();
    await redis?.stop();
    for (const d of [s3Dir, cacheA, cacheB]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('a node function whose bundle carries node_modules resolves its package from /fn', async () => {
    const up = await upload(a, NODE_BUNDLE);
    expect(up.status).toBe(201);
    expect(up.body.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(up.body.size).toBe(NODE_BUNDLE.length);
    // The same bytes again: the same digest, nothing new stored.
    expect((await upload(a, NODE_BUNDLE)).status).toBe(200);
    const dep = await a.request('/functions/padder', { method: 'PUT', body: { runtime: 'node', bundle: up.body.digest } });
    expect(dep.status).toBe(201);
    expect(dep.body.bundle).toEqual({ digest: up.body.digest, bytes: NODE_BUNDLE.length });
    const r = await a.invoke({ function: 'padder', input: { s: 'ab' } });
    expect(r.output).toEqual({ padded: '....ab', from: '/fn/node_modules/tiny-pad/index.js' });
  });

  it('/fn of a bundle is read-only and its bootstrap directory cannot be replaced by the archive', async () => {
    const code = tarGz([{ name: 'main.js', content: "module.exports = async () => { try { require('fs').writeFileSync('/fn/x', '1'); return 'wrote'; } catch (e) { return e.code; } };" }]);
    const up = await upload(a, code);
    expect((await a.request('/functions/writer', { method: 'PUT', body: { runtime: 'node', bundle: up.body.digest } })).status).toBe(201);
    expect((await a.invoke({ function: 'writer', input: {} })).output).toBe('EROFS');
    const evil = await upload(a, tarGz([{ name: 'main.js', content: 'x' }, { name: '.zviz/bootstrap-node.js', content: 'evil' }]));
    const dep = await a.request('/functions/evil', { method: 'PUT', body: { runtime: 'node', bundle: evil.body.digest } });
    expect(dep.status).toBe(400);
    expect(dep.body.error.code).toBe('ARCHIVE_REFUSED');
  });

  it('a python function (zip bundle) imports its vendored package from /fn', async () => {
    const up = await upload(a, PYTHON_BUNDLE);
    expect(up.status).toBe(201);
    expect((await a.request('/functions/shouter', { method: 'PUT', body: { runtime: 'python', bundle: up.body.digest } })).status).toBe(201);
    const r = await a.invoke({ function: 'shouter', input: { s: 'hi' } });
    expect(r.output).toEqual({ loud: 'HI!', from: '/fn/shout/__init__.py' });
  });

  const hostile: Array<[string, Buffer, string]> = [
    ['../ traversal', tarGz([{ name: 'main.js', content: 'x' }, { name: '../../etc/evil', content: 'x' }]), '../../etc/evil'],
    ['an absolute path', tarGz([{ name: '/etc/evil', content: 'x' }]), '/etc/evil'],
    ['a symlink out', tarGz([{ name: 'main.js', content: 'x' }, { name: 'host', type: 'symlink', linkname: '/etc' }]), 'host'],
    ['a hard link to /etc/shadow', tarGz([{ name: 'main.js', content: 'x' }, { name: 'shadow', type: 'hardlink', linkname: '/etc/shadow' }]), 'shadow'],
    ['a device node', tarGz([{ name: 'main.js', content: 'x' }, { name: 'mem', type: 'char' }]), 'mem'],
    ['a setuid binary', tarGz([{ name: 'main.js', content: 'x' }, { name: 'su', content: 'x', mode: 0o4755 }]), 'su'],
    ['zip traversal', zipArchive([{ name: '../evil.py', content: 'x' }]), '../evil.py'],
  ];
  for (const [what, archive, entry] of hostile) {
    it(`a bundle with ${what} is refused with 400 naming the entry, and nothing is unpacked`, async () => {
      const up = await upload(a, archive);
      expect(up.status).toBe(201);
      const dep = await a.request('/functions/hostile', { method: 'PUT', body: { runtime: 'node', bundle: up.body.digest } });
      expect(dep.status).toBe(400);
      expect(dep.body.error.code).toBe('ARCHIVE_REFUSED');
      expect(dep.body.error.details.entry).toBe(entry);
      expect(dep.body.error.message).toContain(JSON.stringify(entry));
      expect(readdirSync(cacheA).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
      expect(existsSync('/etc/evil')).toBe(false);
    });
  }

  it('an upload over ZVIZ_MAX_UPLOAD_MB is 413, declared or streamed, and leaves no part file', async () => {
    const big = Buffer.alloc(MAX_UPLOAD_MB * 1024 * 1024 + 1, 0x61);
    const declared = await upload(a, big);
    expect(declared.status).toBe(413);
    expect(declared.body.error.code).toBe('PAYLOAD_TOO_LARGE');
    // Chunked: no Content-Length, so the cap is met while streaming.
    const chunk = Buffer.alloc(64 * 1024, 0x62);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (sent > MAX_UPLOAD_MB * 1024 * 1024 + chunk.length) return ctl.close();
        sent += chunk.length;
        ctl.enqueue(chunk);
      },
    });
    const streamed = await upload(a, stream).catch((e: unknown) => ({ status: 0, body: String(e), headers: new Headers() }));
    // The server answers 413 as soon as the cap is passed; a client still sending may see the reset instead.
    if (streamed.status !== 0) expect(streamed.status).toBe(413);
    expect(readdirSync(join(a.stateDir, 'uploads', '.part'))).toEqual([]);
  });

  it('zviz deploy DIR packs a directory with node_modules into a bundle, uploads it and deploys it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zviz-deploy-'));
    try {
      const files: Record<string, string> = {
        'manifest.json': JSON.stringify({ name: 'cli-bundle', runtime: 'node', handler: 'main.js' }),
        'main.js': "module.exports = async (e) => require('tiny-pad')(e.s, 4);\n",
        'node_modules/tiny-pad/package.json': '{"name":"tiny-pad","main":"index.js"}',
        'node_modules/tiny-pad/index.js': "module.exports = (s, n) => '-'.repeat(Math.max(0, n - s.length)) + s;\n",
        '.git/config': 'not deployed',
      };
      for (const [p, c] of Object.entries(files)) {
        mkdirSync(join(dir, p, '..'), { recursive: true });
        writeFileSync(join(dir, p), c);
      }
      // Not spawnSync: the object store the server uploads to runs in this process.
      const run = await runCli(['deploy', '--url', a.url, '--key', a.apiKey!, '--json', dir]);
      expect(run.stderr).not.toMatch(/zviz:/);
      expect(run.status).toBe(0);
      const meta = JSON.parse(run.stdout) as { bundle?: { digest: string } };
      expect(meta.bundle?.digest).toMatch(/^sha256:/);
      expect((await a.invoke({ function: 'cli-bundle', input: { s: 'z' } })).output).toBe('---z');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a digest the tenant never uploaded is 404 UNKNOWN_UPLOAD', async () => {
    const dep = await a.request('/functions/ghost', { method: 'PUT', body: { runtime: 'node', bundle: `sha256:${'0'.repeat(64)}` } });
    expect(dep.status).toBe(404);
    expect(dep.body.error.code).toBe('UNKNOWN_UPLOAD');
  });

  it("another tenant cannot deploy a tenant's upload by its digest", async () => {
    const up = await upload(a, NODE_BUNDLE);
    const other = await a.request('/admin/tenants', { method: 'POST', auth: 'admin', body: { name: 'other' } });
    const dep = await a.request('/functions/stolen', { method: 'PUT', body: { runtime: 'node', bundle: up.body.digest }, auth: { bearer: other.body.apiKey } });
    expect(dep.status).toBe(404);
    expect(dep.body.error.code).toBe('UNKNOWN_UPLOAD');
  });

  it('a second server with an empty local store, started under umask 077 (systemd UMask=0077), fetches the bundle from S3 and runs it', async () => {
    // Its cache directory does not exist yet: the server makes it, searchable by the sandboxes' setup user.
    const cacheDir = join(cacheB, 'cache');
    const b = await startServer({ env: { ...s3Env, ZVIZ_BUNDLE_CACHE_DIR: cacheDir }, tenant: false, umask: 0o077 });
    try {
      expect(existsSync(cacheDir)).toBe(false);
      const r = await b.request('/invoke', { method: 'POST', body: { function: 'padder', input: { s: 'xyz' } }, auth: { bearer: a.apiKey! } });
      expect(r.status).toBe(200);
      expect(r.body.output).toMatchObject({ padded: '...xyz' });
      const py = await b.request('/invoke', { method: 'POST', body: { function: 'shouter', input: { s: 'fleet' } }, auth: { bearer: a.apiKey! } });
      expect(py.body.output).toMatchObject({ loud: 'FLEET!' });
      // Fetched into its own store, unpacked into its own cache.
      expect(readdirSync(join(b.stateDir, 'uploads', 'harness')).length).toBe(2);
      expect(readdirSync(cacheDir).filter((n) => !n.startsWith('.')).length).toBe(2);
      expect(statSync(cacheDir).mode & 0o777).toBe(0o711);
    } finally {
      await b.stop();
    }
  }, 60_000);
});
