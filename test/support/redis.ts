// A redis-server of the test's own, on a unix socket in a temp dir (no TCP), that the test
// may kill and restart by pid. Its data survives a restart (appendfsync always).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { silentLogger } from '../../server/ops/log.js';
import { connectRedis, createRedis } from '../../server/state/redis.js';

export interface TestRedis {
  /** Socket path: a valid ZVIZ_REDIS_URL. */
  url: string;
  dir: string;
  /** pid of the running redis-server; null while it is down. */
  pid(): number | null;
  /** Kills it by pid (SIGKILL by default) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same socket and data. */
  restart(): Promise<void>;
  /** A client for assertions on keys; closed by stop(). */
  client(): Promise<Redis>;
  /** Stops it and removes its directory. */
  stop(): Promise<void>;
}

async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function startRedis(): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'zviz-redis-'));
  const socket = join(dir, 'redis.sock');
  const conf = join(dir, 'redis.conf');
  writeFileSync(
    conf,
    [`port 0`, `unixsocket ${socket}`, 'unixsocketperm 700', `dir ${dir}`, 'daemonize no', 'appendonly yes', 'appendfsync always', 'shutdown-on-sigterm force', `logfile ${join(dir, 'redis.log')}`, ''].join('\n'),
  );
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  const clients: Redis[] = [];

  const start = async (): Promise<void> => {
    rmSync(socket, { force: true });
    const c = spawn('redis-server', [conf], { stdio: 'ignore', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    child = c;
    exited = new Promise((res) => c.once('exit', () => res()));
    await waitFor(() => existsSync(socket) || c.exitCode !== null, 10_000, 'redis-server socket');
    if (c.exitCode !== null) throw new Error(`redis-server exited with ${c.exitCode}; see ${dir}/redis.log`);
  };
  await start();

  const running = (): ChildProcess | null => (child !== null && child.exitCode === null && child.signalCode === null ? child : null);

  return {
    url: socket,
    dir,
    pid: () => running()?.pid ?? null,
    async kill(signal = 'SIGKILL') {
      const c = running();
      if (c?.pid === undefined) return;
      process.kill(c.pid, signal);
      await exited;
    },
    restart: start,
    async client() {
      const r = new Redis({ path: socket, lazyConnect: true, maxRetriesPerRequest: 1 });
      r.on('error', () => {});
      await r.connect();
      clients.push(r);
      return r;
    },
    async stop() {
      for (const c of clients) c.disconnect();
      const c = running();
      if (c?.pid !== undefined) {
        process.kill(c.pid, 'SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * For a describe block: a redis-server of its own, started before its tests and stopped
 * after them, and a client as ZViz makes one (server/state/redis.ts), emptied before each test.
 */
export function redisForSuite(): { readonly client: Redis } {
  const holder = {} as { client: Redis };
  let server: TestRedis | undefined;
  beforeAll(async () => {
    server = await startRedis();
    holder.client = createRedis({ url: server.url, log: silentLogger }) as Redis; // a single server: never a Cluster
    await connectRedis(holder.client, 5000);
  });
  afterAll(async () => {
    holder.client?.disconnect();
    await server?.stop();
  });
  beforeEach(async () => {
    await holder.client.flushall();
  });
  return holder;
}
