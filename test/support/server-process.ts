// The built server (dist/server/start.cjs) as a process of the test's (or the benchmark's):
// on an ephemeral loopback port, with its own state directory and so its own private
// Redis, an admin token, and its output kept for the failure message. Shared by the test
// harness (server.ts), the benchmarks and the soak (load-tests/), which run from dist/:
// paths come from the package root (found by package.json), not from this file's place.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';
import { timeScale } from './wait.js';

export const SERVER_ENTRY = join(PACKAGE_ROOT, 'dist', 'server', 'start.cjs');

/** Quotas no functional test or benchmark reaches. */
export const GENEROUS_QUOTAS = { concurrency: 10_000, invocationsPerMinute: 1_000_000, cpuSeconds: 1_000_000_000 };

export interface ServerProcessOptions {
  /** ZVIZ_* over the defaults below. */
  env?: Record<string, string>;
  /** Run on this state directory and keep it at stop (a restart of an earlier server); default: a fresh one. */
  stateDir?: string;
  /** A cgroup directory (a v1 memory cgroup, or a v2 cgroup) the server, and so everything it starts, is born in. */
  memoryCgroup?: string;
  /** cgroup directories (one per hierarchy) the server is born in: a subtree of its own. */
  cgroups?: readonly string[];
  /** Keep only the first and the last 16 KiB of output (a long run logs a line per invocation). */
  boundedLogs?: boolean;
  /** The umask the server is started with (an operator's, e.g. systemd's UMask=0077). Default: this process's. */
  umask?: number;
  /** How long start-up may take. Default 20 s. */
  startTimeoutMs?: number;
}

export interface ServerProcess {
  url: string;
  pid: number;
  stateDir: string;
  adminToken: string;
  /** What it wrote on stdout and stderr (with boundedLogs: the first lines, an ellipsis, the last). */
  logs(): string;
  /** Resolves with its exit code once it has exited. */
  exited: Promise<number | null>;
  /**
   * Sends `signal` (default SIGTERM), waits for the exit (at most `graceMs`, then SIGKILL;
   * default: no limit), removes its state directory unless given one; the exit code, or
   * null when it had to be killed.
   */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
}

/**
 * Stops the private redis-server of a server that is gone, if it outlived it (it should
 * not: the server stops it, and the kernel's parent-death signal covers a SIGKILL).
 */
export function stopPrivateRedis(stateDir: string): void {
  try {
    const pid = Number(readFileSync(join(stateDir, 'redis', 'redis.pid'), 'utf8').trim());
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (cmdline.includes('redis-server') && cmdline.includes(stateDir)) process.kill(pid, 'SIGKILL');
  } catch {
    // no pidfile, or it is gone: the server stopped it
  }
}

export async function startServerProcess(opts: ServerProcessOptions = {}): Promise<ServerProcess> {
  if (!existsSync(SERVER_ENTRY)) throw new Error(`Cannot start the server: ${SERVER_ENTRY} is missing (run \`npm run build\`)`);
  const ownState = opts.stateDir === undefined;
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'zviz-test-'));
  const adminToken = opts.env?.ZVIZ_ADMIN_TOKEN ?? randomBytes(24).toString('hex');
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ZVIZ_HOST: '127.0.0.1',
    ZVIZ_PORT: '0',
    ZVIZ_STATE_DIR: stateDir,
    ZVIZ_LOG_LEVEL: 'info',
    // No load balancer watches a test's server: SIGTERM need not wait for one to notice.
    ZVIZ_DRAIN_NOTICE_MS: '0',
    // Without ZVIZ_REDIS_URL the server runs its own redis-server under stateDir.
    ZVIZ_ADMIN_TOKEN: adminToken,
    ...opts.env,
  };
  // `exec` keeps the pid: the shell becomes the server once it has joined the cgroup.
  const cgroups = [...(opts.memoryCgroup ? [opts.memoryCgroup] : []), ...(opts.cgroups ?? [])];
  // Directories are passed joined by newlines (cgroup paths have none); the umask in octal.
  const umask = opts.umask === undefined ? '' : opts.umask.toString(8);
  const child: ChildProcess =
    cgroups.length > 0 || umask !== ''
      ? spawn(
          '/bin/sh',
          ['-c', 'IFS="$(printf \'\\n_\')"; IFS="${IFS%_}"; for d in $1; do echo $$ > "$d/cgroup.procs" || exit 125; done; [ -z "$2" ] || umask "$2"; shift 2 && exec "$@"', 'sh', cgroups.join('\n'), umask, process.execPath, SERVER_ENTRY],
          { env, stdio: ['ignore', 'pipe', 'pipe'] },
        )
      : spawn(process.execPath, [SERVER_ENTRY], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const LIMIT = 16_384;
  let head = '';
  let tail = '';
  const keep = (d: Buffer): void => {
    const s = d.toString();
    if (!opts.boundedLogs || head.length < LIMIT) head += s;
    else tail = (tail + s).slice(-LIMIT);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const logs = (): string => (tail === '' ? head : `${head}\n…\n${tail}`);
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const cleanUp = (): void => {
    stopPrivateRedis(stateDir);
    if (ownState) rmSync(stateDir, { recursive: true, force: true });
  };

  let url: string;
  try {
    const timeoutMs = (opts.startTimeoutMs ?? 20_000) * timeScale();
    url = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`server did not start within ${timeoutMs / 1000} s:\n${logs()}`)), timeoutMs);
      const check = (): void => {
        const listening = logEntry(head, 'listening');
        if (typeof listening?.url === 'string') {
          clearTimeout(timer);
          res(listening.url);
        }
      };
      child.stdout!.on('data', check);
      void exited.then((code) => {
        clearTimeout(timer);
        rej(new Error(`server exited with ${code} before listening:\n${logs()}`));
      });
    });
  } catch (e) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    cleanUp();
    throw e;
  }

  return {
    url,
    pid: child.pid!,
    stateDir,
    adminToken,
    logs,
    exited,
    stop: async (signal = 'SIGTERM', graceMs) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const late = graceMs === undefined ? null : new Promise<'late'>((r) => setTimeout(() => r('late'), graceMs).unref());
      let code = await (late ? Promise.race([exited, late]) : exited);
      if (code === 'late') {
        child.kill('SIGKILL');
        await exited;
        code = null;
      }
      cleanUp();
      return code;
    },
  };
}

/** The first line of a server's JSON-lines log whose msg is `msg`, parsed; null when there is none (yet). */
export function logEntry(logs: string, msg: string): Record<string, unknown> | null {
  for (const line of logs.split('\n')) {
    if (!line.includes(`"msg":${JSON.stringify(msg)}`)) continue;
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry.msg === msg) return entry;
    } catch {
      // a line still being written, or not one of the log's: look on
    }
  }
  return null;
}

/** A TCP port free on 127.0.0.1 right now (for a server that must keep its port across a restart). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
