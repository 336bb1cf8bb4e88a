// Privileged: CI jobs end to end on a real server. A workspace is uploaded (POST /uploads),
// a job builds and tests a small C project in it with the host's gcc and make and returns
// the binary as an artifact; its log is read after the end and followed live; a cancelled
// job's whole sandbox is gone within a second and its log and artifacts are kept; a job
// that fills its disk ends with reason disk-full; artifact globs never follow a symlink out;
// a cache is restored for the same tenant only; bad inputs are 4xx in the error shape; a job
// runs in an OCI image; a job that logs more than ZVIZ_JOB_LOG_KB keeps only its tail; a job may
// print far more than outputBytes (its log is volume-limited by limits.logMb, not kept by the supervisor).
import { execFile, spawnSync } from 'node:child_process';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tarGz } from './support/archives.js';
import { rawFetch } from './support/compat-auth.js';
import { serverLeftovers } from './support/leftovers.js';
import { descendantsOf, hostProcesses, readTrim, uidOf } from './support/procfs.js';
import { busyboxLayer, writeOciLayout } from './support/oci-images.js';
import { GENEROUS_QUOTAS, privilegedReason, repoRoot, skipReason, startServer, type RunningServer } from './support/server.js';
import { missingPrograms } from './support/shell.js';
import { parseSse } from './support/sse.js';
import { pollUntil, sleep, timeScale } from './support/wait.js';
import { MAX_FOLLOWERS_PER_JOB } from '../server/jobs/routes.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { freePort } from './support/server-process.js';

const skip = privilegedReason();
const LOG_KB = 64;
/** Whether the host has these programs; under ZVIZ_MUST_WORK=1 (CI installs them) missing ones fail the suite. */
function hostHas(...programs: string[]): boolean {
  const missing = missingPrograms(...programs);
  if (skip === null) skipReason('CI jobs tests', missing.length > 0 ? `need ${missing.join(', ')}` : null);
  return missing.length === 0;
}
const hasBuildTools = hostHas('gcc', 'make');
const hasImageTools = hostHas('skopeo', 'umoci');

let s: RunningServer;

function runCli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(repoRoot, 'dist', 'server', 'cli', 'main.js'), ...args], { timeout: 60_000 * timeScale() }, (err, stdout, stderr) =>
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
    );
  });
}

async function upload(body: Buffer, key = s.apiKey!): Promise<string> {
  const r = await rawFetch(`${s.url}/uploads`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' }, body } as RequestInit).catch((e: unknown) => {
    throw new Error(`POST /uploads of ${body.length} bytes failed (${String(e)}); the server's log ends:\n${s.logs().slice(-3000)}`);
  });
  expect(r.status, await r.clone().text()).toBeLessThan(300);
  return ((await r.json()) as { digest: string }).digest;
}

async function startJob(body: Record<string, unknown>, key = s.apiKey!): Promise<string> {
  const r = await s.request('/jobs', { body, auth: { bearer: key } });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  expect(r.body.status).toBe('queued');
  return r.body.id as string;
}

async function waitJob(id: string, key = s.apiKey!, timeoutMs = 120_000): Promise<any> {
  const deadline = Date.now() + timeoutMs * timeScale();
  for (;;) {
    const r = await s.request(`/jobs/${id}`, { auth: { bearer: key } });
    if (r.status === 200) return r.body;
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    if (Date.now() > deadline) throw new Error(`job ${id} did not end`);
    await sleep(100);
  }
}

/** Names of a tar.gz's entries (ustar headers, as node-tar writes them portably). */
function tarNames(gz: Buffer): Map<string, Buffer> {
  const t = gunzipSync(gz);
  const out = new Map<string, Buffer>();
  for (let off = 0; off + 512 <= t.length; ) {
    const h = t.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const name = h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
    const prefix = h.toString('utf8', 345, 500).replace(/\0.*$/s, '');
    const size = parseInt(h.toString('latin1', 124, 136).replace(/\0.*$/s, '').trim() || '0', 8);
    const type = String.fromCharCode(h[156]!);
    off += 512;
    if (type !== 'x' && type !== 'g') out.set(prefix ? `${prefix}/${name}` : name, t.subarray(off, off + size));
    off += Math.ceil(size / 512) * 512;
  }
  return out;
}

async function artifacts(id: string, key = s.apiKey!): Promise<Map<string, Buffer>> {
  const r = await rawFetch(`${s.url}/jobs/${id}/artifacts`, { headers: { authorization: `Bearer ${key}` } });
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toBe('application/gzip');
  return tarNames(Buffer.from(await r.arrayBuffer()));
}

/** ZVIZ_UID_BASE's default, which the suite's server runs with: sandbox processes run at or above it. */
const SANDBOX_UID_BASE = 1_000_000_000;

/** The supervisors a server runs (its zviz-supervisor children). */
function supervisorsOf(server: number): number[] {
  return hostProcesses()
    .filter((p) => p.comm === 'zviz-supervisor' && p.ppid === server)
    .map((p) => p.pid);
}

/** A /proc/<pid>/status size (VmRSS, VmHWM) in bytes; 0 once the process is gone. */
function statusBytes(pid: number, field: string): number {
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readTrim(`/proc/${pid}/status`) ?? '')?.[1] ?? 0) * 1024;
}

/** What the server's jobs left on the host: workspace mounts, image files and the loop devices over them. */
function workspaceLeftovers(): string[] {
  const loops = spawnSync('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE']).stdout.toString().split('\n').filter((l) => l.includes(join(s.stateDir, 'jobs')));
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(`/run/zviz/jobs/${s.pid}-`));
  const images = readdirSync(join(s.stateDir, 'jobs')).filter((n) => n.endsWith('.ext4'));
  return [...mounts, ...images, ...loops];
}

const C_PROJECT = tarGz([
  { name: 'src/', type: 'dir' },
  { name: 'src/hello.c', content: '#include <stdio.h>\nint add(int a, int b) { return a + b; }\n#ifndef TEST\nint main(void) { printf("hello %d\\n", add(2, 3)); return 0; }\n#endif\n' },
  { name: 'src/test.c', content: '#define TEST\n#include "hello.c"\nint main(void) { if (add(2, 2) != 4) { puts("FAIL"); return 1; } puts("tests passed"); return 0; }\n' },
  {
    name: 'Makefile',
    content: 'all: build/hello\nbuild/hello: src/hello.c\n\tmkdir -p build\n\tgcc -O2 -o $@ $<\ntest: src/test.c src/hello.c\n\tmkdir -p build\n\tgcc -o build/test src/test.c\n\t./build/test\n',
  },
]);

describe.skipIf(skip !== null)('CI jobs on a real server', () => {
  let other: { key: string };

  beforeAll(async () => {
    // Callbacks go to a receiver on 127.0.0.1, which the operator has to list.
    s = await startServer({ env: { ZVIZ_JOB_LOG_KB: String(LOG_KB), ZVIZ_CALLBACK_HOSTS: '127.0.0.1' } });
    const created = await s.request('/admin/tenants', { auth: 'admin', body: { name: 'other-team', quotas: GENEROUS_QUOTAS } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    other = { key: created.body.apiKey };
  }, 120_000 * timeScale());

  afterAll(async () => {
    await s?.stop();
  });

  it.skipIf(!hasBuildTools)('builds a C project from an uploaded workspace with the host gcc and make, runs its tests, returns the binary (needs gcc, make)', async () => {
    const workspace = await upload(C_PROJECT);
    const id = await startJob({ workspace, script: 'make test\nmake\n./build/hello', artifacts: ['build/hello'], limits: { timeoutMs: 120_000, diskMb: 64 } });
    const job = await waitJob(id);
    expect(job, JSON.stringify(job)).toMatchObject({ id, kind: 'job', status: 'ok', exitCode: 0, reason: null, profile: 'ci', workspace, runtime: 'bash' });
    expect(job.limits.diskMb).toBe(64);
    expect(job.artifacts).toMatchObject({ files: 1, truncated: false, skipped: [] });
    expect(job.artifacts.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const files = await artifacts(id);
    expect([...files.keys()]).toEqual(['build/hello']);
    expect(files.get('build/hello')!.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    // The log after the end: plain, and as an event stream that ends with the record.
    const log = await s.request(`/jobs/${id}/log`);
    expect(log.status).toBe(200);
    expect(log.body).toContain('tests passed');
    expect(log.body).toContain('hello 5');
    const followed = await s.request(`/jobs/${id}/log?follow=1`);
    const events = parseSse(followed.body);
    expect(events.map((e) => e.event)).toEqual(['log', 'end']);
    expect(JSON.parse(events[0]!.data)).toContain('tests passed');
    expect(JSON.parse(events[1]!.data)).toMatchObject({ id, status: 'ok' });
    expect(workspaceLeftovers()).toEqual([]);
  }, 180_000 * timeScale());

  it('streams a running job\'s log live with ?follow=1, then its record', async () => {
    const id = await startJob({ script: 'for i in 1 2 3 4 5; do echo "line $i"; sleep 0.3; done; echo done >&2' });
    const r = await rawFetch(`${s.url}/jobs/${id}/log?follow=1`, { headers: { authorization: `Bearer ${s.apiKey}` } });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toContain('text/event-stream');
    const events = parseSse(await r.text());
    const text = events.filter((e) => e.event === 'log').map((e) => JSON.parse(e.data) as string).join('');
    expect(text).toBe('line 1\nline 2\nline 3\nline 4\nline 5\ndone\n');
    expect(events.filter((e) => e.event === 'log').length).toBeGreaterThan(1);
    expect(events.at(-1)!.event).toBe('end');
    expect(JSON.parse(events.at(-1)!.data)).toMatchObject({ id, status: 'ok', log: { bytes: 40, keptBytes: 40 } });
  }, 60_000 * timeScale());

  it('cancel kills the whole sandbox within 1 s; the job ends killed/cancelled with its log and artifacts', async () => {
    const id = await startJob({ script: 'mkdir -p out; echo partial > out/report.txt; echo started; sleep 600 & sleep 600; echo never', artifacts: ['out/**'] });
    for (let i = 0; ; i++) {
      const log = await s.request(`/jobs/${id}/log`);
      if (log.status === 200 && String(log.body).includes('started')) break;
      if (i > 600) throw new Error('the job never started');
      await sleep(50);
    }
    expect(serverLeftovers(s).some((l) => l.startsWith('process '))).toBe(true);
    // The job's own processes (its shell and both sleeps), by their sandbox uid.
    const jobProcesses = descendantsOf(s.pid).filter((p) => (uidOf(p.pid) ?? 0) >= SANDBOX_UID_BASE);
    expect(jobProcesses.filter((p) => p.cmdline.startsWith('sleep 600')).length).toBe(2);
    const t0 = performance.now();
    const cancelled = await s.request(`/jobs/${id}`, { method: 'DELETE' });
    const tookMs = performance.now() - t0;
    expect(cancelled.status, JSON.stringify(cancelled.body)).toBe(200);
    expect(cancelled.body).toMatchObject({ id, status: 'killed', reason: 'cancelled' });
    // The DELETE answers once the job ended: its sandbox is gone by then.
    expect(tookMs).toBeLessThan(1000 * timeScale() + 500);
    expect(serverLeftovers(s)).toEqual([]);
    expect(jobProcesses.filter((p) => existsSync(`/proc/${p.pid}`) && uidOf(p.pid) !== null && uidOf(p.pid)! >= SANDBOX_UID_BASE)).toEqual([]);
    expect(workspaceLeftovers()).toEqual([]);
    const job = await waitJob(id);
    expect(job).toMatchObject({ status: 'killed', reason: 'cancelled' });
    expect((await s.request(`/jobs/${id}/log`)).body).toBe('started\n');
    expect([...(await artifacts(id)).keys()]).toEqual(['out/report.txt']);
    // Cancelling an ended job answers its record again.
    const again = await s.request(`/jobs/${id}`, { method: 'DELETE' });
    expect([again.status, again.body.status, again.body.reason]).toEqual([200, 'killed', 'cancelled']);
  }, 60_000 * timeScale());

  it('a job that writes more than its disk fails with reason disk-full, and the host disk is untouched', async () => {
    const before = spawnSync('df', ['--output=avail', '-B1', s.stateDir]).stdout.toString().trim().split('\n')[1];
    const id = await startJob({ script: 'dd if=/dev/urandom of=big bs=1M count=64; echo after', limits: { diskMb: 16 } });
    const job = await waitJob(id);
    expect(job, JSON.stringify(job)).toMatchObject({ status: 'error', reason: 'disk-full' });
    expect(job.exitCode).not.toBe(0);
    const log = String((await s.request(`/jobs/${id}/log`)).body);
    expect(log).toMatch(/No space left on device/);
    expect(log).not.toContain('after');
    expect(workspaceLeftovers()).toEqual([]);
    const after = spawnSync('df', ['--output=avail', '-B1', s.stateDir]).stdout.toString().trim().split('\n')[1];
    // Not 64 MiB less: the job could write only into its 16 MiB filesystem, now removed.
    expect(Number(before) - Number(after)).toBeLessThan(32 * 1024 * 1024);
  }, 60_000 * timeScale());

  it('artifact globs never follow a symlink out of the workspace: out -> /etc is skipped, not archived', async () => {
    const id = await startJob({
      script: 'ln -s /etc out; ln -s /etc/passwd pw; mkdir keep; echo mine > keep/x; ln -s /etc/hostname keep/link; ln -s ../../.. keep/up',
      artifacts: ['out', 'out/**', 'pw', 'keep/**', '**/passwd', '*/hostname'],
    });
    const job = await waitJob(id);
    expect(job.status).toBe('ok');
    const skipped = job.artifacts.skipped.map((x: { path: string }) => x.path).sort();
    expect(skipped).toEqual(['keep/link', 'keep/up', 'out', 'pw']);
    const files = await artifacts(id);
    expect([...files.keys()]).toEqual(['keep/x']);
    expect(files.get('keep/x')!.toString()).toBe('mine\n');
  }, 60_000 * timeScale());

  it('a background process swapping an artifact for a symlink to a host file never gets host content archived', async () => {
    const id = await startJob({
      script: 'echo mine > a; (while :; do ln -sf /etc/hostname t; mv -f t a; echo mine > u; mv -f u a; done) & sleep 1',
      artifacts: ['a'],
    });
    const job = await waitJob(id);
    expect(job.status).toBe('ok');
    const files = job.artifacts.digest === '' ? new Map<string, Buffer>() : await artifacts(id);
    const a = files.get('a');
    // Collected once the sandbox has no process: `a` is whatever it was then, a regular
    // file of the job's (archived) or a symlink (skipped), never the host's file.
    if (a === undefined) expect(job.artifacts.skipped.map((x: { path: string }) => x.path)).toEqual(['a']);
    else expect(a.toString()).toBe('mine\n');
    expect([...files.values()].some((b) => b.includes(readFileSync('/etc/hostname')))).toBe(false);
  }, 60_000 * timeScale());

  it('a cache saved by one job is restored in the next job of the same tenant and never in another tenant\'s', async () => {
    const first = await waitJob(await startJob({ script: 'test ! -e deps; mkdir -p deps; echo v1 > deps/lib.txt', cache: { key: 'deps-v1', paths: ['deps'] } }));
    expect(first, JSON.stringify(first)).toMatchObject({ status: 'ok', cache: { key: 'deps-v1', restored: false, saved: true } });
    const second = await waitJob(await startJob({ script: 'cat deps/lib.txt', cache: { key: 'deps-v1', paths: ['deps'] } }));
    expect(second).toMatchObject({ status: 'ok', cache: { restored: true, saved: true } });
    expect((await s.request(`/jobs/${second.id}/log`)).body).toBe('v1\n');
    const foreign = await waitJob(await startJob({ script: 'test ! -e deps && echo clean', cache: { key: 'deps-v1', paths: ['deps'] } }, other.key), other.key);
    expect(foreign).toMatchObject({ status: 'ok', cache: { restored: false } });
    // Nor can the other tenant read the first tenant's job at all.
    expect((await s.request(`/jobs/${second.id}`, { auth: { bearer: other.key } })).status).toBe(404);
  }, 120_000 * timeScale());

  it("an upload seeds a cache the tenant has not saved yet, the saved cache wins after, and another tenant's digest is refused", async () => {
    const seed = await upload(tarGz([{ name: 'vendor/lib.txt', content: 'seeded\n' }]));
    const cache = { key: 'seeded-v1', paths: ['vendor'], seed };
    const first = await waitJob(await startJob({ script: 'cat vendor/lib.txt; echo saved > vendor/lib.txt', cache }));
    expect(first, JSON.stringify(first)).toMatchObject({ status: 'ok', cache: { key: 'seeded-v1', restored: true, seeded: true, saved: true } });
    expect((await s.request(`/jobs/${first.id}/log`)).body).toBe('seeded\n');
    const second = await waitJob(await startJob({ script: 'cat vendor/lib.txt', cache }));
    expect(second).toMatchObject({ status: 'ok', cache: { restored: true, seeded: false } });
    expect((await s.request(`/jobs/${second.id}/log`)).body).toBe('saved\n');
    // Checked before the 202, as a workspace is: another tenant's digest is one it never uploaded.
    for (const [body, key] of [
      [{ script: 'true', cache: { key: 'seeded-v1', paths: ['vendor'], seed } }, other.key],
      [{ script: 'true', cache: { key: 'seeded-v1', paths: ['vendor'], seed: `sha256:${'0'.repeat(64)}` } }, s.apiKey!],
    ] as const) {
      const r = await s.request('/jobs', { body, auth: { bearer: key } });
      expect([r.status, r.body.error?.code], JSON.stringify(r.body)).toEqual([404, 'UNKNOWN_UPLOAD']);
      expect(r.body.error.details).toEqual({ digest: body.cache.seed, field: 'cache.seed' });
    }
    const traversal = await upload(tarGz([{ name: '../escape.txt', content: 'x' }]));
    const refused = await s.request('/jobs', { body: { script: 'true', cache: { key: 'k', paths: ['a'], seed: traversal } } });
    expect([refused.status, refused.body.error?.code]).toEqual([400, 'ARCHIVE_REFUSED']);
    // The command line: a directory as the seed (packed and uploaded), or a digest as it is.
    const dir = mkdtempSync(join(tmpdir(), 'zviz-job-seed-'));
    try {
      mkdirSync(join(dir, 'seed', 'vendor'), { recursive: true });
      writeFileSync(join(dir, 'seed', 'vendor', 'lib.txt'), 'from the cli\n');
      const remote = ['--url', s.url, '--key', s.apiKey!, '--cache-key', 'cli-seed', '--cache-path', 'vendor'];
      const packed = await runCli(['job', 'run', ...remote, '--cache-seed', join(dir, 'seed'), '--json', '--', 'cat', 'vendor/lib.txt']);
      expect(packed.status, packed.stderr).toBe(0);
      expect(JSON.parse(packed.stdout)).toMatchObject({ status: 'ok', cache: { restored: true, seeded: true } });
      expect(packed.stderr).toContain('from the cli');
      const byDigest = await runCli(['job', 'run', ...remote.slice(0, 4), '--cache-key', 'cli-digest', '--cache-path', 'vendor', '--cache-seed', seed, '--', 'cat', 'vendor/lib.txt']);
      expect([byDigest.status, byDigest.stdout], byDigest.stderr).toEqual([0, 'seeded\n']);
      const alone = await runCli(['job', 'run', '--url', s.url, '--key', s.apiKey!, '--cache-seed', seed, '--', 'true']);
      expect(alone.status).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000 * timeScale());

  it('refuses bad inputs with 4xx in the error shape', async () => {
    const traversal = await upload(tarGz([{ name: 'ok.txt', content: 'x' }, { name: '../escape.txt', content: 'x' }]));
    const linkOut = await upload(tarGz([{ name: 'etc', type: 'symlink', linkname: '/etc' }]));
    const big = await upload(tarGz([{ name: 'big.bin', content: randomBytes(15 * 1024 * 1024) }]));
    const cases: Array<[Record<string, unknown>, number, string]> = [
      [{ workspace: traversal, script: 'true' }, 400, 'ARCHIVE_REFUSED'],
      [{ workspace: linkOut, script: 'true' }, 400, 'ARCHIVE_REFUSED'],
      [{ workspace: big, script: 'true', limits: { diskMb: 16 } }, 400, 'LIMIT_EXCEEDS_PROFILE'],
      [{ workspace: `sha256:${'0'.repeat(64)}`, script: 'true' }, 404, 'UNKNOWN_UPLOAD'],
      [{ workspace: 'nope', script: 'true' }, 400, 'VALIDATION_FAILED'],
      [{}, 400, 'VALIDATION_FAILED'],
      [{ script: 'true', command: ['true'] }, 400, 'VALIDATION_FAILED'],
      [{ script: 'true', artifacts: ['../up'] }, 400, 'VALIDATION_FAILED'],
      [{ script: 'true', artifacts: ['/etc/passwd'] }, 400, 'VALIDATION_FAILED'],
      [{ script: 'true', cache: { key: '../x', paths: ['a'] } }, 400, 'VALIDATION_FAILED'],
      [{ script: 'true', profile: 'default' }, 400, 'JOBS_NOT_ALLOWED'],
      [{ script: 'true', profile: 'nope' }, 404, 'UNKNOWN_PROFILE'],
      [{ script: 'true', limits: { diskMb: 1024 * 1024 } }, 400, 'VALIDATION_FAILED'],
      [{ script: 'true', limits: { diskMb: 100_000 } }, 400, 'LIMIT_EXCEEDS_PROFILE'],
      [{ script: 'true', limits: { timeoutMs: 7 * 3600 * 1000 } }, 400, 'VALIDATION_FAILED'],
      [{ script: 'true', secrets: { '/run/token': 'missing' } }, 409, 'SECRET_MISSING'],
      [{ script: 'true', image: 'sha256:' + 'a'.repeat(64) }, 404, 'IMAGE_NOT_FOUND'],
      [{ script: 'true', callbackUrl: 'http://203.0.113.9/hook' }, 400, 'CALLBACK_NOT_ALLOWED'],
    ];
    for (const [body, status, code] of cases) {
      const r = await s.request('/jobs', { body });
      expect([r.status, r.body?.error?.code], JSON.stringify({ body, got: r.body })).toEqual([status, code]);
      expect(typeof r.body.error.message).toBe('string');
    }
    const notJson = await s.request('/jobs', { body: 'script=true', headers: { 'content-type': 'text/plain' } });
    expect(notJson.status).toBe(415);
    const unknown = '00000000-0000-4000-8000-000000000000';
    for (const [path, method] of [[`/jobs/${unknown}`, 'GET'], [`/jobs/${unknown}`, 'DELETE'], [`/jobs/${unknown}/log`, 'GET'], [`/jobs/${unknown}/artifacts`, 'GET'], ['/jobs/not-an-id', 'GET']] as const) {
      const r = await s.request(path, { method });
      expect([r.status, r.body.error.code], path).toEqual([404, 'UNKNOWN_JOB']);
    }
    const none = await waitJob(await startJob({ script: 'true' }));
    const r = await s.request(`/jobs/${none.id}/artifacts`);
    expect([r.status, r.body.error.code]).toEqual([404, 'NO_ARTIFACTS']);
    expect(workspaceLeftovers()).toEqual([]);
  }, 120_000 * timeScale());

  it('zviz job run packs a directory, follows the log, exits with the job\'s status and downloads the artifacts; status and log read it back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zviz-job-cli-'));
    try {
      mkdirSync(join(dir, 'ws'));
      writeFileSync(join(dir, 'ws', 'greeting.txt'), 'hi from the cli\n');
      writeFileSync(join(dir, 'job.sh'), 'cat greeting.txt\nmkdir -p out && echo made > out/a.txt\nexit 3\n');
      const remote = ['--url', s.url, '--key', s.apiKey!];
      const r = await runCli(['job', 'run', ...remote, '--workspace', join(dir, 'ws'), '--script', join(dir, 'job.sh'), '--artifact', 'out/*', '-o', join(dir, 'out.tar.gz')]);
      expect(r.status, r.stderr).toBe(3);
      expect(r.stdout).toBe('hi from the cli\n');
      expect([...tarNames(readFileSync(join(dir, 'out.tar.gz'))).keys()]).toEqual(['out/a.txt']);
      const id = /job ([0-9a-f-]{36})/.exec(r.stderr)![1]!;
      const status = await runCli(['job', 'status', ...remote, '--json', id]);
      expect(JSON.parse(status.stdout)).toMatchObject({ id, status: 'error', exitCode: 3 });
      const log = await runCli(['job', 'log', ...remote, id]);
      expect(log.stdout).toBe('hi from the cli\n');
      const bad = await runCli(['job', 'status', ...remote, 'not-an-id']);
      expect(bad.status).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000 * timeScale());

  it.skipIf(!hasImageTools)('runs a job in an OCI image, its workspace mounted at /workspace (needs skopeo, umoci)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zviz-job-image-'));
    chmodSync(dir, 0o755);
    try {
      writeOciLayout(join(dir, 'busybox'), 'latest', [busyboxLayer()], { Env: ['PATH=/bin'], Entrypoint: ['/bin/false'] });
      const pulled = await s.request('/admin/images', { auth: 'admin', body: { reference: `oci:${join(dir, 'busybox')}:latest` } });
      expect(pulled.status, JSON.stringify(pulled.body)).toBeLessThan(300);
      let pull = pulled.body;
      for (let i = 0; i < 600 && pull.status === 'pulling'; i++) {
        await sleep(100);
        pull = (await s.request(pulled.headers.get('location')!, { auth: 'admin' })).body;
      }
      expect(pull.status, JSON.stringify(pull)).toBe('done');
      const workspace = await upload(tarGz([{ name: 'input.txt', content: 'from the workspace\n' }]));
      const id = await startJob({ image: pull.image.digest, workspace, script: 'pwd; cat input.txt; id -u; echo built > result.txt', artifacts: ['result.txt'] });
      const job = await waitJob(id);
      expect(job, JSON.stringify(job)).toMatchObject({ status: 'ok', image: pull.image.digest, runtime: null });
      expect((await s.request(`/jobs/${id}/log`)).body).toBe('/workspace\nfrom the workspace\n1000\n');
      expect((await artifacts(id)).get('result.txt')!.toString()).toBe('built\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000 * timeScale());

  it('a command job gets its env and a secret, and its record is POSTed to its callback', async () => {
    const received: Array<{ headers: Record<string, unknown>; body: any }> = [];
    const receiver = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        received.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString()) });
        res.end('ok');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    try {
      const secretDir = join(s.stateDir, 'secrets', 'harness');
      mkdirSync(secretDir, { recursive: true, mode: 0o700 });
      writeFileSync(join(secretDir, 'registry-token'), 'tok-3141', { mode: 0o600 });
      const callbackUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/job-done`;
      const id = await startJob({
        command: ['/bin/sh', '-c', 'echo "$GREETING from $(pwd)"; cat /run/secrets/token; echo'],
        env: { GREETING: 'hello' },
        secrets: { '/run/secrets/token': 'registry-token' },
        callbackUrl,
      });
      const job = await waitJob(id);
      expect(job, JSON.stringify(job)).toMatchObject({ id, status: 'ok', exitCode: 0 });
      expect((await s.request(`/jobs/${id}/log`)).body).toBe('hello from /workspace\ntok-3141\n');
      const deadline = Date.now() + 20_000 * timeScale();
      while (received.length === 0 && Date.now() < deadline) await sleep(50);
      expect(received).toHaveLength(1);
      expect(received[0]!.headers['x-zviz-invocation']).toBe(id);
      expect(received[0]!.body).toMatchObject({ id, kind: 'job', status: 'ok', exitCode: 0 });
      expect((await s.request(`/jobs/${id}`)).body).toEqual(received[0]!.body);
    } finally {
      receiver.close();
    }
  }, 60_000 * timeScale());

  it('a job outlives its clients: the POST\'s connection closed at once and a follower that hangs up mid-run change nothing', async () => {
    // The POST: sent on a raw connection that is destroyed as soon as the 202's first bytes arrive.
    const body = JSON.stringify({ script: 'for i in $(seq 1 12); do echo "tick $i"; sleep 0.1; done; echo finished' });
    const id = await new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${s.url}/jobs`, { method: 'POST', headers: { authorization: `Bearer ${s.apiKey}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        res.once('data', (d: Buffer) => {
          req.destroy();
          const m = /"id":"([0-9a-f-]{36})"/.exec(d.toString());
          if (res.statusCode === 202 && m) resolve(m[1]!);
          else reject(new Error(`POST /jobs: ${res.statusCode} ${d.toString()}`));
        });
      });
      req.on('error', reject);
      req.end(body);
    });
    // A follower reads the first log event, then hangs up.
    const ac = new AbortController();
    const follow = await rawFetch(`${s.url}/jobs/${id}/log?follow=1`, { headers: { authorization: `Bearer ${s.apiKey}` }, signal: ac.signal });
    const reader = follow.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain('event: log');
    ac.abort();
    const job = await waitJob(id);
    expect(job, JSON.stringify(job)).toMatchObject({ id, status: 'ok', exitCode: 0 });
    const log = String((await s.request(`/jobs/${id}/log`)).body);
    expect(log.split('\n').filter((l) => l.startsWith('tick ')).length).toBe(12);
    expect(log.endsWith('finished\n')).toBe(true);
    expect((await s.request('/healthz')).status).toBe(200);
    expect(workspaceLeftovers()).toEqual([]);
  }, 60_000 * timeScale());

  it(`a running job has at most ${MAX_FOLLOWERS_PER_JOB} followers: one more is 429 TOO_MANY_FOLLOWERS until one hangs up`, async () => {
    const id = await startJob({ script: 'echo started; sleep 60' });
    const follow = (signal: AbortSignal) => rawFetch(`${s.url}/jobs/${id}/log?follow=1`, { headers: { authorization: `Bearer ${s.apiKey}` }, signal });
    const hangUps = Array.from({ length: MAX_FOLLOWERS_PER_JOB }, () => new AbortController());
    try {
      for (const ac of hangUps) expect((await follow(ac.signal)).status).toBe(200);
      const extra = await s.request(`/jobs/${id}/log?follow=1`);
      expect([extra.status, extra.body.error.code]).toEqual([429, 'TOO_MANY_FOLLOWERS']);
      // Without follow the log is always there.
      expect((await s.request(`/jobs/${id}/log`)).status).toBe(200);
      hangUps[0]!.abort();
      const again = await pollUntil(async () => {
        const ac = new AbortController();
        const r = await follow(ac.signal);
        if (r.status !== 200) await r.body?.cancel();
        return { r, ac };
      }, (x) => x.r.status === 200, 10_000 * timeScale(), 100);
      expect(again.r.status).toBe(200);
      hangUps[0] = again.ac;
    } finally {
      for (const ac of hangUps) ac.abort();
      await s.request(`/jobs/${id}`, { method: 'DELETE' });
    }
  }, 60_000 * timeScale());

  // ZVIZ_JOBS_SOAK_S=600 runs the 10-minute form; CI runs ~8 s of it.
  const soakS = Number(process.env.ZVIZ_JOBS_SOAK_S ?? 8);
  it(`a ${soakS} s job with a steady log of 128 MiB and a follower that never reads: only ZVIZ_JOB_LOG_KB is kept, the follower is dropped, the server memory stays bounded (ZVIZ_JOBS_SOAK_S)`, async () => {
    const rss = () => statusBytes(s.pid, 'VmRSS');
    const before = rss();
    // 128 lines of 1 MiB spread over the run: twice what the server's memory may grow by
    // passes through it, 2048 times what it may keep of the log.
    const lines = 128;
    const total = lines * (1024 * 1024 + 1) + 10;
    const id = await startJob({
      script: `for i in $(seq 1 ${lines}); do head -c 1048576 /dev/zero | tr "\\0" "x"; echo; sleep ${(soakS / lines).toFixed(3)}; done; echo last-line`,
      limits: { timeoutMs: (soakS + 120) * 1000, logMb: Math.ceil(total / (1024 * 1024)) + 1 },
    });
    // A follower that takes nothing: its socket fills, the server stops queueing for it past 4 MiB.
    const stalled = await rawFetch(`${s.url}/jobs/${id}/log?follow=1`, { headers: { authorization: `Bearer ${s.apiKey}` } });
    expect(stalled.status).toBe(200);
    let peak = before;
    let job: any = null;
    const deadline = Date.now() + (soakS + 120) * 1000 * timeScale();
    while (job === null) {
      peak = Math.max(peak, rss());
      const r = await s.request(`/jobs/${id}`);
      if (r.status === 200) job = r.body;
      else if (Date.now() > deadline) throw new Error(`job ${id} did not end`);
      else await sleep(100);
    }
    expect(job, JSON.stringify(job)).toMatchObject({ status: 'ok', exitCode: 0 });
    expect(job.log.bytes).toBe(total);
    expect(job.log.keptBytes).toBe(LOG_KB * 1024);
    const log = String((await s.request(`/jobs/${id}/log`)).body);
    expect(log.length).toBe(LOG_KB * 1024);
    expect(log.endsWith('last-line\n')).toBe(true);
    // The stalled follower, read at last: what was queued for it, then its `closed` event —
    // unless, taking nothing for 10 s after the end, it was cut off before that came.
    const reader = stalled.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    let cut = false;
    for (;;) {
      const part = await reader.read().catch(() => null);
      if (part === null) cut = true;
      if (part === null || part.done) break;
      text += decoder.decode(part.value, { stream: true });
    }
    const events = parseSse(text);
    if (!cut) {
      expect(events.at(-1)?.event).toBe('closed');
      expect(JSON.parse(events.at(-1)!.data)).toMatchObject({ reason: 'slow-follower' });
    }
    expect(events.some((e) => e.event === 'end')).toBe(false);
    // What reached it at all (events, framing), cut or not: a bounded part of the log.
    const got = text.length;
    expect(got).toBeLessThan(total / 2);
    // Everything passed through the server (total bytes); it held a bounded part of it.
    const grew = peak - before;
    console.log(`[jobs soak] ${soakS} s, ${total} bytes logged, stalled follower got ${got} before it was dropped (${cut ? 'then cut off' : 'then its closed event'}); server RSS ${before} -> peak ${peak} (+${grew})`);
    expect(grew).toBeLessThan(total / 2);
  }, (Number(process.env.ZVIZ_JOBS_SOAK_S ?? 8) + 180) * 1000 * timeScale());

  it('a job that prints 64 MiB (past the 16 MiB outputBytes cap) ends ok with the right kept tail; the supervisor keeps none of it', async () => {
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${s.pid}/status`, 'utf8'))![1]) * 1024;
    const before = rss();
    const total = 64 * 1024 * 1024;
    const id = await startJob({ script: `(yes 0123456789abcdef || true) | head -c ${total}; echo last-line`, limits: { timeoutMs: 300_000 } });
    // The supervisors' peak memory while the job runs (VmHWM: their largest RSS so far).
    let supervisorPeak = 0;
    let job: any = null;
    const deadline = Date.now() + 300_000 * timeScale();
    while (job === null) {
      supervisorPeak = Math.max(supervisorPeak, ...supervisorsOf(s.pid).map((pid) => statusBytes(pid, 'VmHWM')));
      const r = await s.request(`/jobs/${id}`);
      if (r.status === 200) job = r.body;
      else if (Date.now() > deadline) throw new Error(`job ${id} did not end`);
      else await sleep(50);
    }
    expect(job, JSON.stringify(job)).toMatchObject({ status: 'ok', exitCode: 0, reason: null });
    expect(job.log.bytes).toBe(total + 10);
    const log = Buffer.from(String((await s.request(`/jobs/${id}/log`)).body));
    const line = '0123456789abcdef\n';
    const printed = (i: number) => (i < total ? line.charCodeAt(i % line.length) : 'last-line\n'.charCodeAt(i - total));
    const expected = Buffer.from(Array.from({ length: LOG_KB * 1024 }, (_, i) => printed(total + 10 - LOG_KB * 1024 + i)));
    expect(log.equals(expected)).toBe(true);
    // A supervisor that kept what it forwarded would hold tens of MiB here.
    expect(supervisorPeak).toBeGreaterThan(0);
    expect(supervisorPeak).toBeLessThan(16 * 1024 * 1024);
    expect(rss() - before).toBeLessThan(64 * 1024 * 1024);
  }, 360_000 * timeScale());

  it('a job past its log volume limit (limits.logMb) is killed with reason output-limit; its log ends at the limit with a message', async () => {
    const over = await s.request('/jobs', { body: { script: 'true', limits: { logMb: 1_000_000 } } });
    expect(over.status).toBe(400);
    const tooMuch = await s.request('/jobs', { body: { script: 'true', limits: { logMb: 60_000 } } });
    expect(tooMuch.status, JSON.stringify(tooMuch.body)).toBe(400);
    expect(tooMuch.body.error).toMatchObject({ code: 'LIMIT_EXCEEDS_PROFILE', message: expect.stringContaining('logMb must be at most 16384') });
    const id = await startJob({ script: 'yes', limits: { logMb: 2, timeoutMs: 120_000 } });
    const job = await waitJob(id);
    const note = "\n[zviz] job killed: its output passed its log limit of 2 MiB (limits.logMb)\n";
    expect(job, JSON.stringify(job)).toMatchObject({ status: 'killed', reason: 'output-limit' });
    expect(job.limits.logMb).toBe(2);
    expect(job.log.bytes).toBe(2 * 1024 * 1024 + note.length);
    const log = String((await s.request(`/jobs/${id}/log`)).body);
    expect(log.endsWith(`y\ny\n${note}`)).toBe(true);
  }, 180_000 * timeScale());
});

describe.skipIf(skip !== null)('a server SIGKILLed mid-job, started again on the same state directory', () => {
  let redis: TestRedis;
  let stateDir: string;
  let second: RunningServer | null = null;

  beforeAll(async () => {
    redis = await startRedis();
    stateDir = mkdtempSync(join(tmpdir(), 'zviz-jobs-crash-'));
  });
  afterAll(async () => {
    await second?.stop();
    await redis?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("removes the dead server's workspace before listening and reports the job failed with reason host-restart", async () => {
    const env = { ZVIZ_REDIS_URL: redis.url, ZVIZ_PORT: String(await freePort()) };
    const first = await startServer({ stateDir, env });
    const r = await first.request('/jobs', { body: { script: 'echo started; sleep 600' } });
    expect(r.status).toBe(202);
    const id = r.body.id as string;
    const mountOf = (pid: number) =>
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[4] ?? '')
        .filter((p) => p.startsWith(`/run/zviz/jobs/${pid}-`));
    for (let i = 0; mountOf(first.pid).length === 0; i++) {
      if (i > 400) throw new Error('the job never got its workspace');
      await sleep(50);
    }
    expect(await first.stop('SIGKILL')).toBeNull();
    // The supervisor sees its server gone and kills the sandbox; the mount stays until a sweep.
    expect(mountOf(first.pid).length).toBe(1);
    second = await startServer({ stateDir, env, tenant: false });
    expect(mountOf(first.pid)).toEqual([]);
    expect(readdirSync(join(stateDir, 'jobs')).filter((n) => n.endsWith('.ext4'))).toEqual([]);
    const rec = await second.request(`/jobs/${id}`, { auth: { bearer: first.apiKey! } });
    for (let i = 0; rec.status === 202 && i < 100; i++) await sleep(100);
    const after = await second.request(`/jobs/${id}`, { auth: { bearer: first.apiKey! } });
    expect(after.body).toMatchObject({ id, status: 'failed', reason: 'host-restart' });
  }, 180_000 * timeScale());
});
