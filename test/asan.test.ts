// The supervisor built with ASan + UBSan (make -C native asan) runs real invocations —
// cold and warm, every runtime, the ways an invocation can end — and reports nothing.
// It is where every byte from the server is parsed and every sandbox is driven.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { busyboxLayer, writeOciLayout } from './support/oci-images.js';
import { sleep } from './support/wait.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { privilegedReason, repoRoot, type RunningServer, skipReason, startServer } from './support/server.js';

const asanSupervisor = join(repoRoot, 'native', 'build-asan', 'zviz-supervisor');

function reason(): string | null {
  const why = privilegedReason();
  if (why) return why;
  return skipReason('ASan suite', existsSync(asanSupervisor) ? null : `ASan supervisor not built (${asanSupervisor}): run \`make -C native asan\``);
}

const imageTools = ['skopeo', 'umoci'].filter((t) => spawnSync(t, ['--version']).status !== 0);

const SANITIZER_REPORT = /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:/;

describe.skipIf(reason() !== null)('the ASan + UBSan supervisor', () => {
  let s: RunningServer;
  beforeAll(async () => {
    s = await startServer({ asan: true, env: { ZVIZ_WARM_MAX: '4' } });
    const put = await s.request('/functions/asan-hello', { method: 'PUT', body: { runtime: 'node', code: 'module.exports = async (e) => ({ got: e })' } });
    expect(put.status).toBe(201);
  });
  afterAll(async () => {
    await s?.stop();
  });

  const cases: Array<{ name: string; body: Record<string, unknown>; status: string }> = [
    { name: 'node prints', body: { runtime: 'node', code: 'console.log(1)' }, status: 'ok' },
    { name: 'python reads stdin', body: { runtime: 'python', code: 'import sys; print(sys.stdin.read())', stdin: 'x' }, status: 'ok' },
    { name: 'bash exits 3', body: { runtime: 'bash', code: 'exit 3' }, status: 'error' },
    // Answered when the bootstrap closes fd 4, before the runtime exits; torn down after.
    { name: 'a deployed node handler', body: { function: 'asan-hello', input: { n: 1 } }, status: 'ok' },
    { name: 'python leaves 1 MiB of stdin unread', body: { runtime: 'python', code: 'print(1)', stdin: 'x'.repeat(1 << 20) }, status: 'ok' },
    { name: 'a timeout', body: { runtime: 'bash', code: 'sleep 5', limits: { timeoutMs: 300 } }, status: 'timeout' },
    { name: 'an output flood', body: { runtime: 'bash', code: 'yes', limits: { outputBytes: 1000 } }, status: 'killed' },
    { name: 'a memory bomb', body: { runtime: 'python', code: 'b = bytearray(512 * 1024 * 1024)', limits: { memoryMb: 64 } }, status: 'oom' },
    {
      name: 'an x32 syscall',
      body: { runtime: 'python', code: 'import ctypes; ctypes.CDLL(None).syscall(39 | 0x40000000)' },
      status: 'killed',
    },
    { name: 'a denied syscall', body: { runtime: 'python', code: 'import ctypes, sys; sys.exit(1 if ctypes.CDLL(None).unshare(0x10000000) != 0 else 0)' }, status: 'error' },
  ];

  it.each(cases)('$name ends as $status twice (cold, then warm) without a sanitizer report', async ({ body, status }) => {
    for (let i = 0; i < 2; i++) {
      const r = await s.invoke(body);
      expect(r.status).toBe(status);
    }
    expect(s.logs()).not.toMatch(SANITIZER_REPORT);
  });

  // Image roots: the mount is cloned, made read-only and idmapped on the trusted side. An
  // image whose User is root is idmapped with the sandbox's own user namespace once its maps
  // are written (native/src/mnt.c zv_mnt_idmap_pending); one whose User is another id with a
  // helper namespace made before clone3 (userns.c). Both, cold, twice each.
  it.skipIf(imageTools.length > 0)('image roots idmapped through the own-namespace and the helper-namespace paths run without a sanitizer report (needs skopeo, umoci)', async () => {
    const work = mkdtempSync(join(tmpdir(), 'zviz-asan-images-'));
    chmodSync(work, 0o755);
    try {
      const images: Record<'own' | 'helper', string> = { own: '', helper: '' };
      for (const [path, user] of [['own', null], ['helper', 'app']] as const) {
        const dir = join(work, path);
        writeOciLayout(dir, 'latest', [busyboxLayer()], { Env: ['PATH=/bin'], ...(user ? { User: user } : {}) });
        const started = await s.request('/admin/images', { body: { reference: `oci:${dir}:latest` }, auth: 'admin' });
        expect([200, 202]).toContain(started.status);
        let p = started.body;
        for (let i = 0; i < 300 && p.status === 'pulling'; i++) {
          await sleep(100);
          p = (await s.request(started.headers.get('location')!, { auth: 'admin' })).body;
        }
        if (started.status === 202) expect(p.status).toBe('done');
        images[path] = started.status === 200 ? p.digest : p.image.digest;
      }
      for (let i = 0; i < 2; i++) {
        // Root's files are root's (idmapped, not the overflow id); the function is 1000.
        const own = await s.invoke({ image: images.own, command: ['sh', '-c', 'stat -c "%u %U" /bin/busybox; id -u'] });
        expect(own).toMatchObject({ status: 'ok', stdout: '0 root\n1000\n' });
        // The image's app (1001) is the function: its private file is readable.
        const helper = await s.invoke({ image: images.helper, command: ['sh', '-c', 'cat /home/app/secret.txt; id -u'] });
        expect(helper).toMatchObject({ status: 'ok', stdout: 'app-only\n1000\n' });
      }
      expect(s.logs()).not.toMatch(SANITIZER_REPORT);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('a reusable environment serves, resets (/tmp with a tree and a symlink) and is discarded without a sanitizer report', async () => {
    const code = `const fs = require('node:fs'); let n = 0;
module.exports = async (e) => {
  n++;
  if (e.write) { fs.mkdirSync('/tmp/a/b', { recursive: true }); fs.writeFileSync('/tmp/a/b/c', 'x'); fs.symlinkSync('/fn', '/tmp/l'); }
  if (e.bg) require('node:child_process').spawn('/usr/bin/sleep', ['5'], { detached: true, stdio: 'ignore' }).unref();
  if (e.crash) process.exit(2);
  return { n, tmp: fs.readdirSync('/tmp') };
};`;
    const put = await s.request('/functions/reused', { method: 'PUT', body: { runtime: 'node', code, reuse: { maxInvocations: 10 } } });
    expect(put.status).toBe(201);
    const steps: Array<[Record<string, unknown>, string, number]> = [
      [{ write: true }, 'ok', 1],
      [{}, 'ok', 2],
      [{ bg: true }, 'ok', 3],
      [{}, 'ok', 1],
      [{ crash: true }, 'error', 2],
      [{}, 'ok', 1],
    ];
    for (const [input, status, index] of steps) {
      const r = await s.invoke({ function: 'reused', input });
      expect(r.status, JSON.stringify(r)).toBe(status);
      expect(r.invocationIndex).toBe(index);
      // After the first step's tree and symlink, the reset left /tmp empty.
      if (status === 'ok' && input.write === undefined && index === 2) expect(r.output.tmp).toEqual([]);
    }
    expect(s.logs()).not.toMatch(SANITIZER_REPORT);
  });

  it("a reusable environment whose boot fails to load or passes timeoutMs answers its first invocation, without a sanitizer report", async () => {
    const cases: Array<[string, string, string]> = [
      ['reused-raises', 'raise RuntimeError("broken at load")\ndef handler(e, c):\n    return 1\n', 'error'],
      ['reused-hangs', 'import time\ntime.sleep(3600)\ndef handler(e, c):\n    return 1\n', 'timeout'],
    ];
    for (const [name, code, status] of cases) {
      const put = await s.request(`/functions/${name}`, { method: 'PUT', body: { runtime: 'python', code, limits: { timeoutMs: 1500 }, reuse: { maxInvocations: 10 } } });
      expect(put.status).toBe(201);
      for (let i = 0; i < 2; i++) {
        const r = await s.request('/invoke', { method: 'POST', body: { function: name } });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body, JSON.stringify(r.body)).toMatchObject({ status, invocationIndex: 1 });
      }
    }
    expect(s.logs()).not.toMatch(SANITIZER_REPORT);
  });

  it('the supervisors that run are the ASan build', async () => {
    const running = s.invoke({ runtime: 'bash', code: 'sleep 1', limits: { timeoutMs: 5000 } });
    await new Promise((r) => setTimeout(r, 400));
    // The supervisors of this server: its children running a zviz-supervisor binary.
    const exes = readdirSync('/proc')
      .filter((n) => /^\d+$/.test(n))
      .map((pid) => {
        try {
          const ppid = /^PPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
          return Number(ppid) === s.pid ? readlinkSync(`/proc/${pid}/exe`) : '';
        } catch {
          return '';
        }
      })
      .filter((exe) => exe.endsWith('/zviz-supervisor'));
    await running;
    expect(exes.length).toBeGreaterThan(0);
    expect(exes.every((exe) => exe === asanSupervisor)).toBe(true);
  });

  it('the server stops cleanly and no supervisor reported anything on exit (LeakSanitizer runs then)', async () => {
    expect(await s.stop()).toBe(0);
    expect(s.logs()).not.toMatch(SANITIZER_REPORT);
  });
});
