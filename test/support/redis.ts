// Redis servers of the test's own: one on a unix socket in a temp dir (no TCP), that the test
// may kill and restart by pid, its data surviving a restart (appendfsync always); or a Redis
// Cluster of several masters on loopback. Each is stopped by pid and its directory removed.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { silentLogger } from '../../server/ops/log.js';
import { connectRedis, createRedis } from '../../server/state/redis.js';
import { ProcessGroup } from './processes.js';
import { freePort } from './server-process.js';
import { missingPrograms } from './shell.js';
import { pollUntil, timeScale, waitFor } from './wait.js';

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
    await waitFor(() => existsSync(socket) || c.exitCode !== null || null, 'redis-server socket', 10_000 * timeScale(), 20);
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

/** Why a Redis Cluster of the test's own cannot start here (Debian's redis-server and redis-cli), or null. */
export function redisClusterUnavailable(): string | null {
  const missing = missingPrograms('redis-server', 'redis-cli');
  return missing.length === 0 ? null : `needs ${missing.join(' and ')} in PATH`;
}

export interface TestRedisCluster {
  /** `redis+cluster://` naming every master: a valid ZVIZ_REDIS_URL. */
  url: string;
  /** The masters' ports. */
  ports: number[];
  /** The port of the master that serves `key`'s slot. */
  masterOf(key: string): Promise<number>;
  /** Stops every node by pid and removes the directory. */
  stop(): Promise<void>;
}

/** One command to one node on a fresh connection; null when it cannot answer. */
async function ask(port: number, ...args: string[]): Promise<unknown> {
  const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 2000, commandTimeout: 5000 });
  r.on('error', () => {});
  try {
    await r.connect();
    return await r.call(args[0]!, ...args.slice(1));
  } catch {
    return null; // not up (yet): the caller polls
  } finally {
    r.disconnect();
  }
}

/**
 * A Redis Cluster of `masters` masters (no replicas) on loopback ports of its own, formed with
 * `redis-cli --cluster create`; resolves once every node says `cluster_state:ok`.
 */
export async function startRedisCluster(masters = 3): Promise<TestRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'zviz-cluster-'));
  const procs = new ProcessGroup();
  const stop = async (): Promise<void> => {
    await procs.stopAll();
    rmSync(dir, { recursive: true, force: true });
  };
  // The cluster bus gets a port of its own too (cluster-port): port + 10000 may not be free.
  const free = await Promise.all(Array.from({ length: 2 * masters }, () => freePort()));
  const ports = free.slice(0, masters);
  try {
    for (const [i, port] of ports.entries()) {
      const d = join(dir, `node${i}`);
      mkdirSync(d);
      const conf = join(d, 'redis.conf');
      writeFileSync(
        conf,
        [`port ${port}`, `cluster-port ${free[masters + i]}`, 'bind 127.0.0.1', 'cluster-enabled yes', 'cluster-config-file nodes.conf', 'cluster-node-timeout 5000', `dir ${d}`, 'save ""', 'appendonly no', 'daemonize no', ''].join('\n'),
      );
      procs.start(`redis-cluster-${port}`, 'redis-server', [conf]);
    }
    const wait = 30_000 * timeScale();
    const up = await pollUntil(async () => (await Promise.all(ports.map((p) => ask(p, 'PING')))).every((a) => a === 'PONG'), (ok) => ok, wait, 100);
    if (!up) throw new Error(`the cluster nodes did not answer PING within ${wait} ms`);
    await promisify(execFile)('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-yes'], { timeout: wait, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    const ok = await pollUntil(
      async () => (await Promise.all(ports.map((p) => ask(p, 'CLUSTER', 'INFO')))).every((i) => typeof i === 'string' && i.includes('cluster_state:ok') && i.includes(`cluster_known_nodes:${masters}`)),
      (done) => done,
      wait,
      100,
    );
    if (!ok) throw new Error(`the cluster did not reach cluster_state:ok within ${wait} ms`);
  } catch (e) {
    const logs = procs.outputs();
    await stop();
    throw new Error(`Cannot start a Redis Cluster of ${masters} masters: ${(e as Error).message}\n${logs}`);
  }
  return {
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    ports,
    async masterOf(key) {
      const slot = (await ask(ports[0]!, 'CLUSTER', 'KEYSLOT', key)) as number;
      const ranges = (await ask(ports[0]!, 'CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]]]>;
      const owner = ranges.find(([from, to]) => slot >= from && slot <= to);
      if (owner === undefined) throw new Error(`no master serves slot ${slot} of ${key}`);
      return owner[2][1];
    },
    stop,
  };
}
