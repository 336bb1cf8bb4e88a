// The `zviz` command line, privileged: real sandboxes through `zviz run`, the host probe
// through `zviz doctor`, a stale cgroup through `zviz sweep`, and `zviz invoke` and
// `zviz deploy` against a real server. Each case runs the built executable
// (dist/server/cli/zviz.cjs, package.json's bin) as a user would.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planCgroups } from '../worker-pool/host/cgroups.js';
import { hostLeftovers, settledLeftovers } from './support/leftovers.js';
import { privilegedReason, repoRoot, type RunningServer, startServer } from './support/server.js';
import { cgroupDriver, hasIa32, hasX32 } from './support/machine.js';

const entry = join(repoRoot, 'dist', 'server', 'cli', 'zviz.cjs');

interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `zviz ARGS…` to its end; stdin is `input`, or /dev/null when none is given. */
function zviz(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [entry, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...opts.env },
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

describe.skipIf(privilegedReason() !== null)('zviz command line (privileged)', () => {
  let before: string[] = [];
  beforeAll(() => {
    before = hostLeftovers();
  });
  afterAll(async () => {
    expect(await settledLeftovers([], before)).toEqual([]);
  });

  describe('zviz run', () => {
    it('runs the command as uid 1000 and exits with its code', async () => {
      const r = await zviz(['run', '--', '/usr/bin/id', '-u']);
      expect(r).toMatchObject({ code: 0, stdout: '1000\n', stderr: '' });
    });

    it("exits with the command's own exit code", async () => {
      const r = await zviz(['run', '--', '/usr/bin/bash', '-c', 'exit 7']);
      expect(r).toMatchObject({ code: 7, stderr: '' });
    });

    it('a command past its timeout exits 124 with the timeout line', async () => {
      const r = await zviz(['run', '--timeout', '300ms', '--', '/usr/bin/sleep', '5']);
      expect(r.code).toBe(124);
      expect(r.stderr).toBe('zviz: killed: timeout after 300 ms\n');
    });

    it('passes stdin through', async () => {
      const r = await zviz(['run', '--', '/usr/bin/cat'], { input: 'hi\n' });
      expect(r).toMatchObject({ code: 0, stdout: 'hi\n' });
    });

    it('looks a bare command name up in the sandbox PATH and streams both outputs', async () => {
      const r = await zviz(['run', '--', 'bash', '-c', 'echo out; echo err >&2']);
      expect(r).toMatchObject({ code: 0, stdout: 'out\n', stderr: 'err\n' });
    });

    it('a command killed by a signal exits 128 + the signal, saying so', async () => {
      const r = await zviz(['run', '--', '/usr/bin/bash', '-c', 'kill -TERM $$']);
      expect(r.code).toBe(143);
      expect(r.stderr).toBe('zviz: killed by SIGTERM\n');
    });

    it('a command over its memory limit exits 137 with the out-of-memory line', async () => {
      const r = await zviz(['run', '--memory', '32', '--', '/usr/bin/python3', '-c', 'x = bytearray(256 * 1024 * 1024)']);
      expect(r.code).toBe(137);
      expect(r.stderr).toContain('zviz: killed: out of memory (limit 32 MiB)\n');
    });

    it('--json prints the result as JSON on stdout and nothing else', async () => {
      const r = await zviz(['run', '--json', '--pids', '8', '--', '/usr/bin/bash', '-c', 'echo hello; exit 3']);
      expect(r.code).toBe(3);
      expect(r.stderr).toBe('');
      const result = JSON.parse(r.stdout);
      expect(result).toMatchObject({ status: 'error', exitCode: 3, signal: null, stdout: 'hello\n', stderr: '', profile: 'default' });
      expect(result.limits.pids).toBe(8);
    });

    it('--memory above the profile max exits 2 naming the flag and the max', async () => {
      const r = await zviz(['run', '--memory', '999999', '--', '/usr/bin/true']);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe('zviz: Invalid --memory: must be at most 1024 MiB for profile \'default\': current value is "999999"\n');
    });

    it('every layer applies without a worker pool: own pid and network namespaces, no capabilities, seccomp, no_new_privs', async () => {
      const r = await zviz([
        'run',
        '--',
        '/usr/bin/bash',
        '-c',
        'grep -E "^(CapEff|Seccomp|NoNewPrivs):" /proc/self/status; ls /proc | grep -c "^[0-9]"; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "',
      ]);
      expect(r.code).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines.slice(0, 3)).toEqual(['CapEff:\t0000000000000000', 'NoNewPrivs:\t1', 'Seccomp:\t2']);
      // Our own pid namespace: a handful of processes (the init, bash, grep's and ls's), not the host's.
      expect(Number(lines[3])).toBeLessThan(6);
      expect(lines.slice(4)).toEqual(['lo']);
    });

    it('^C stops a running sandbox and exits 130 saying so: the event loop is free while the sandbox runs', async () => {
      const child = spawn(process.execPath, [entry, 'run', '--', '/usr/bin/bash', '-c', 'echo up; exec sleep 30'], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      // Streamed output reaches us while the sandbox still runs; then ^C.
      await new Promise<void>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (stdout.includes('up\n')) resolve();
        }),
      );
      child.kill('SIGINT');
      expect(await closed).toBe(130);
      expect(stderr).toContain('interrupted by SIGINT: the sandbox was stopped');
    });

    it('a command that does not exist in the sandbox exits 127 with the reason', async () => {
      const r = await zviz(['run', '--', '/nonexistent/tool']);
      expect(r.code).toBe(127);
      expect(r.stderr).toContain('execve `/nonexistent/tool`: No such file or directory');
    });
  });

  describe('zviz doctor', () => {
    it(`--json parses, reports this host fit and its cgroup driver [this host: cgroup ${cgroupDriver()}]`, async () => {
      const r = await zviz(['doctor', '--json']);
      expect(r.code).toBe(0);
      const report = JSON.parse(r.stdout);
      expect(report.ok).toBe(true);
      // Whatever this host's layout (v1 hybrid or v2), the report names the driver the server would pick.
      expect(report.facts.cgroup.driver).toBe(cgroupDriver());
      expect(report.facts.syscallAbis).toMatchObject({ ia32: hasIa32(), x32: hasX32() });
      expect(report.checks.map((c: { name: string }) => c.name)).toEqual(
        expect.arrayContaining(['kernel', 'user namespaces', 'cgroups', 'landlock', 'seccomp', 'nftables', 'syscall ABIs', 'lsm']),
      );
    });

    it('prints a readable report', async () => {
      const r = await zviz(['doctor']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^This host can run the profiles\.\n/);
      expect(r.stdout).toMatch(/ {2}ok {4}user namespaces +user\.max_user_namespaces = \d+/);
    });
  });

  describe('zviz sweep', () => {
    it('removes a stale sandbox cgroup of a dead server', async () => {
      const plan = planCgroups(readFileSync('/proc/self/cgroup', 'utf8'), readFileSync('/proc/self/mountinfo', 'utf8'));
      const parent = plan.parents.find((p) => p.controllers.includes('memory') || p.controllers.includes('unified'))!.parent;
      const madeParent = !existsSync(parent);
      const stale = join(parent, 'zviz-999999-x');
      mkdirSync(stale, { recursive: true });
      try {
        const r = await zviz(['sweep', '--json']);
        expect(r.code).toBe(0);
        const report = JSON.parse(r.stdout);
        expect(report.removed).toContain(`cgroup ${stale}`);
        expect(existsSync(stale)).toBe(false);
        expect(report.kept.every((k: string) => !k.includes('zviz-999999-'))).toBe(true);
      } finally {
        for (const dir of madeParent ? [stale, parent] : [stale]) {
          try {
            rmdirSync(dir);
          } catch {
            // removed by the sweep, or in use by a server that started meanwhile
          }
        }
      }
    });
  });

  describe('zviz invoke and zviz deploy against a server', () => {
    let s: RunningServer;
    let fnDir: string;
    beforeAll(async () => {
      s = await startServer();
      fnDir = mkdtempSync(join(tmpdir(), 'zviz-cli-fn-'));
      writeFileSync(join(fnDir, 'manifest.json'), JSON.stringify({ name: 'cli-greet', runtime: 'python', handler: 'main.py' }));
      writeFileSync(join(fnDir, 'main.py'), 'def handler(event, context):\n    print("log line")\n    return {"hello": event.get("name")}\n');
    });
    afterAll(async () => {
      rmSync(fnDir, { recursive: true, force: true });
      if (s) await s.stop();
    });
    const remote = (): string[] => ['--url', s.url, '--key', s.apiKey!];

    it('zviz invoke runs inline code with our stdin and exits with its code', async () => {
      const code = join(fnDir, '..', `zviz-cli-code-${process.pid}.py`);
      writeFileSync(code, 'import sys\nprint(sys.stdin.read().upper(), end="")\nsys.exit(5)\n');
      try {
        const r = await zviz(['invoke', ...remote(), '--runtime', 'python', '--code', code], { input: 'hi\n' });
        expect(r).toMatchObject({ code: 5, stdout: 'HI\n', stderr: '' });
      } finally {
        rmSync(code, { force: true });
      }
    });

    it('zviz invoke reads the key from ZVIZ_KEY and reports a timeout like run', async () => {
      const r = await zviz(['invoke', '--url', s.url, '--runtime', 'bash', '--code', '-', '--timeout', '300ms'], {
        input: 'sleep 5',
        env: { ZVIZ_KEY: s.apiKey! },
      });
      expect(r.code).toBe(124);
      expect(r.stderr).toBe('zviz: killed: timeout after 300 ms\n');
    });

    it('zviz invoke --json prints the raw result; a refusal exits 125 with the error', async () => {
      const ok = await zviz(['invoke', ...remote(), '--json', '--runtime', 'bash', '--code', '-'], { input: 'echo hey' });
      expect(ok.code).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ status: 'ok', exitCode: 0, stdout: 'hey\n' });
      const refused = await zviz(['invoke', ...remote(), '--json', '--runtime', 'bash', '--code', '-', '--memory', '4096'], { input: 'true' });
      expect(refused.code).toBe(125);
      expect(JSON.parse(refused.stdout)).toMatchObject({ error: { code: 'LIMIT_EXCEEDS_PROFILE' } });
      expect(refused.stderr).toContain('[LIMIT_EXCEEDS_PROFILE, HTTP 400]');
    });

    it('zviz deploy sends a function directory; zviz invoke --function prints its output', async (ctx) => {
      const probe = await s.request('/functions/cli-probe', { method: 'PUT', body: {} });
      if (probe.status === 404 || probe.status === 405) ctx.skip(`this server has no PUT /functions/:name (answered ${probe.status})`);
      const d = await zviz(['deploy', ...remote(), fnDir]);
      expect(d.stderr).toBe('');
      expect(d.code).toBe(0);
      expect(d.stdout).toMatch(/^cli-greet version \d+\n$/);
      const r = await zviz(['invoke', ...remote(), '--function', 'cli-greet', '--input', '{"name":"zviz"}']);
      expect(r).toMatchObject({ code: 0, stdout: '{"hello":"zviz"}\n', stderr: 'log line\n' });
      const json = await zviz(['deploy', ...remote(), '--json', fnDir]);
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toMatchObject({ name: 'cli-greet', runtime: 'python', handler: 'main.py' });
    });
  });
});
