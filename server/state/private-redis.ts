// The private Redis a server runs when ZVIZ_REDIS_URL is unset: `redis-server` under
// `<state dir>/redis`, reachable only through a unix socket of mode 0700 (no TCP at all),
// persisting with an append-only file plus RDB snapshots in the same directory.
//
// Its lifetime is the server's: it runs as our child (`daemonize no`) in its own process
// group, so a Ctrl-C meant for the server does not stop it before the server drained; it
// is stopped last at shutdown. If the server dies without a shutdown (SIGKILL), the kernel
// sends Redis SIGTERM (parent-death signal, set by setpriv before exec), and Redis saves and
// exits. Where setpriv is missing, the next start finds the leftover through its pidfile and
// stops it before starting a new one.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../ops/log.js';

const SETPRIV = '/usr/bin/setpriv';
/** sun_path is 108 bytes with its NUL. */
const MAX_SOCKET_PATH = 107;

export interface PrivateRedis {
  /** Socket path, usable as ZVIZ_REDIS_URL. */
  socket: string;
  pid: number;
  /** SIGTERM (Redis saves), then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface PrivateRedisOptions {
  /** Directory of the socket, config, pidfile, log and data; created 0700. */
  dir: string;
  /** redis-server binary (ZVIZ_REDIS_SERVER). */
  binary: string;
  log: Logger;
  /** How long to wait for the socket to answer. Default 10 s. */
  startTimeoutMs?: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !alive(pid);
}

/** Stops a redis-server a previous server left on this socket (it was SIGKILLed without setpriv). */
async function stopLeftover(pidfile: string, socket: string, log: Logger): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(pidfile, 'utf8').trim());
  } catch {
    return; // no pidfile: no redis-server of ours to stop
  }
  if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) return;
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return; // it exited meanwhile: nothing to stop
  }
  // The pid may have been reused by another process: only ours names our socket.
  if (!cmdline.includes('redis-server') || !cmdline.includes(socket)) return;
  log.warn('stopping the private redis-server a previous server left running', { pid });
  process.kill(pid, 'SIGTERM');
  if (!(await waitGone(pid, 10_000))) {
    process.kill(pid, 'SIGKILL');
    await waitGone(pid, 2000);
  }
}

function config(dir: string, socket: string): string {
  return [
    '# Written by ZViz at each start; edits are overwritten.',
    'port 0',
    `unixsocket ${socket}`,
    'unixsocketperm 700',
    `dir ${dir}`,
    'daemonize no',
    `pidfile ${join(dir, 'redis.pid')}`,
    `logfile ${join(dir, 'redis.log')}`,
    'appendonly yes',
    'appendfsync everysec',
    'save 3600 1 300 100 60 10000',
    'dbfilename dump.rdb',
    // Exit on SIGTERM even when the last save fails (state dir removed, disk full): a Redis
    // that refuses to stop would outlive its server forever.
    'shutdown-on-sigterm force',
    '',
  ].join('\n');
}

function logTail(dir: string): string {
  try {
    return readFileSync(join(dir, 'redis.log'), 'utf8').trim().split('\n').slice(-5).join('\n');
  } catch {
    return '(no redis.log)'; // it never started far enough to write one
  }
}

export async function startPrivateRedis(opts: PrivateRedisOptions): Promise<PrivateRedis> {
  const { dir, log } = opts;
  const socket = join(dir, 'redis.sock');
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new Error(`Cannot start the private Redis: socket path ${socket} is longer than ${MAX_SOCKET_PATH} bytes (use a shorter ZVIZ_STATE_DIR)`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const pidfile = join(dir, 'redis.pid');
  await stopLeftover(pidfile, socket, log);
  rmSync(socket, { force: true });
  const conf = join(dir, 'redis.conf');
  writeFileSync(conf, config(dir, socket), { mode: 0o600 });

  const [cmd, args] = existsSync(SETPRIV)
    ? [SETPRIV, ['--pdeathsig', 'SIGTERM', '--', opts.binary, conf]]
    : [opts.binary, [conf]];
  // A minimal environment: nothing of the server's (tokens, URLs) reaches Redis.
  const child: ChildProcess = spawn(cmd, args, {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
    stdio: 'ignore',
    detached: true,
  });
  const pid = child.pid;
  // Written by the child's events; a holder object, so the checks below see the updates.
  const status: { exited: string | null } = { exited: null };
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      status.exited = signal ?? `code ${code}`;
      resolve();
    });
    child.once('error', (e) => {
      status.exited = e.message;
      resolve();
    });
  });
  // fatal() exits synchronously; the child must not outlive it even without setpriv.
  const onExit = (): void => {
    if (status.exited === null) child.kill('SIGTERM');
  };
  process.on('exit', onExit);

  // The socket file appears once Redis listens on it.
  const until = Date.now() + (opts.startTimeoutMs ?? 10_000);
  while (!existsSync(socket)) {
    if (status.exited !== null || Date.now() > until) {
      if (status.exited === null) child.kill('SIGKILL');
      process.off('exit', onExit);
      const why = status.exited === null ? 'it did not open its socket in time' : `it exited (${status.exited})`;
      throw new Error(`Cannot start the private Redis (${opts.binary}): ${why}; its log says:\n${logTail(dir)}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  log.info('started private redis-server', { pid, socket, dir, persistence: 'appendonly + rdb' });

  return {
    socket,
    pid: pid ?? -1,
    async stop(graceMs = 10_000) {
      process.off('exit', onExit);
      if (status.exited !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exit;
      clearTimeout(timer);
      log.info('stopped private redis-server', { pid });
    },
  };
}
