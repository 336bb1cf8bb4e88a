// Server configuration, from the environment, validated by one zod schema. A bad value
// stops start-up with a message naming the variable and the value.
import { join, resolve } from 'node:path';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { PACKAGE_ROOT } from '../worker-pool/util/package-root.js';
import { parseCallbackHosts, validCallbackHost } from './invocation/callbacks.js';
import { parseRegistryList } from '../worker-pool/images/reference.js';
import type { S3Config } from './uploads/s3.js';
import { DEFAULT_MAX_SANDBOXES, DEFAULT_WARM_MAX, LIBUV_MAX, THREADPOOL_MARGIN, threadpoolNeed } from '../worker-pool/threadpool.cjs';

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0'; // no readable package.json (a trimmed install): an unknown version
  }
}

/** The version in package.json, reported by GET /openapi.json. */
export const PACKAGE_VERSION = packageVersion();

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const configSchema = z.object({
  ZVIZ_HOST: z.string().min(1).default('127.0.0.1'),
  ZVIZ_PORT: int(0, 65535).default(8080),
  ZVIZ_STATE_DIR: z.string().regex(/^\//, 'must be an absolute path').default('/var/lib/zviz'),
  ZVIZ_PROFILES_DIR: z.string().min(1).default(join(PACKAGE_ROOT, 'profiles')),
  /** Directory of the language catalog's `*.json` definitions (validated at start-up). */
  ZVIZ_RUNTIMES_DIR: z.string().min(1).default(join(PACKAGE_ROOT, 'worker-pool', 'runtime', 'catalog')),
  ZVIZ_MAX_SANDBOXES: int(1, 1024).default(DEFAULT_MAX_SANDBOXES),
  ZVIZ_MAX_QUEUE: int(0, 100_000).default(256),
  ZVIZ_UID_BASE: int(65536, 4_000_000_000).default(1_000_000_000),
  ZVIZ_DRAIN_MS: int(0, 600_000).default(15_000),
  /**
   * How long a draining server keeps listening, answering 503 SHUTTING_DOWN, so load
   * balancers see it leave before it closes its connections (at most ZVIZ_DRAIN_MS).
   */
  ZVIZ_DRAIN_NOTICE_MS: int(0, 600_000).default(2000),
  ZVIZ_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  /** Named network namespace that routes egress sandboxes; unset: the host's own. */
  ZVIZ_NET_ROUTER_NETNS: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be a network namespace name').optional(),
  /** IPv4 pool egress sandboxes get /31 pairs from. */
  ZVIZ_NET_POOL: z
    .string()
    .regex(/^\d{1,3}(\.\d{1,3}){3}\/(1[6-9]|2[0-9]|30)$/, 'must be an IPv4 CIDR between /16 and /30')
    .default('10.199.0.0/16'),
  /** Accept test-only profile features (network mode "join"). Never on a production host. */
  ZVIZ_ALLOW_TEST_PROFILES: z.enum(['0', '1']).default('0'),
  /** Most pre-warmed sandboxes on this host (0 turns warm pools off). */
  ZVIZ_WARM_MAX: int(0, 1024).default(DEFAULT_WARM_MAX),
  /** Most memory warm sandboxes may be made with, all pools together, in MiB. */
  ZVIZ_WARM_BUDGET_MB: int(0, 1_048_576).default(4096),
  /** Most warm sandboxes of one pool (one function version or runtime + profile). */
  ZVIZ_WARM_PER_POOL: int(1, 1024).default(8),
  /** Warm sandbox creations in flight at once. */
  ZVIZ_WARM_CONCURRENCY: int(1, 64).default(2),
  /** A pool without claims for this long shrinks to nothing. */
  ZVIZ_WARM_IDLE_MS: int(1000, 86_400_000).default(60_000),
  /** Interface egress is masqueraded on (production); unset: no NAT. */
  ZVIZ_NET_UPLINK: z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be an interface name').optional(),
  /** redis://, rediss:// or unix:// URL, or a socket path. Unset: a private redis-server under the state dir. */
  ZVIZ_REDIS_URL: z
    .string()
    .regex(/^(rediss?:\/\/|redis\+(sentinel|cluster):\/\/|unix:\/\/\/|\/)/, 'must be a redis://, rediss://, redis+sentinel://, redis+cluster:// or unix:/// URL or an absolute socket path')
    .optional(),
  /** The redis-server binary the private Redis runs (only when ZVIZ_REDIS_URL is unset). */
  ZVIZ_REDIS_SERVER: z.string().min(1).default('redis-server'),
  /** Bearer token of the admin API, GET /host and GET /metrics. Unset: those answer 403. */
  ZVIZ_ADMIN_TOKEN: z
    .string()
    .min(16)
    .max(512)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
    .optional(),
  /** A second listener on 127.0.0.1 that serves GET /metrics without a token. Unset: none. */
  ZVIZ_METRICS_PORT: int(0, 65535).optional(),
  /** Audit records kept in Redis per stream (global and per tenant); the file keeps all. */
  ZVIZ_AUDIT_KEEP: int(100, 10_000_000).default(10_000),
  /** A concurrency lease lives timeoutMs + this long unless refreshed: how soon a dead host's slots free. */
  ZVIZ_LEASE_SLACK_MS: int(1000, 3_600_000).default(30_000),
  /** How long the result of an async invocation is kept for GET /invocations/:id, in seconds. */
  ZVIZ_RESULT_TTL_S: int(60, 30 * 24 * 3600).default(3600),
  /** host[:port] entries, comma-separated, that callbackUrl may name; loopback too only when listed. */
  ZVIZ_CALLBACK_HOSTS: z
    .string()
    .refine((v) => parseCallbackHosts(v).every(validCallbackHost), 'must be comma-separated host or host:port entries')
    .default(''),
  /** Longest a callback attempt may take, in ms (three attempts at most). */
  ZVIZ_CALLBACK_TIMEOUT_MS: int(100, 60_000).default(5000),
  /** Registry hosts (host[:port], comma-separated) images may be pulled from; empty: none, imports only. */
  ZVIZ_IMAGE_REGISTRIES: z
    .string()
    .refine((v) => parseRegistryList(v).every((h) => REGISTRY_HOST.test(h)), 'must be comma-separated host or host:port entries')
    .default(''),
  /** Listed registries spoken to over plain HTTP (a registry on loopback); never for a remote one. */
  ZVIZ_IMAGE_INSECURE_REGISTRIES: z
    .string()
    .refine((v) => parseRegistryList(v).every((h) => REGISTRY_HOST.test(h)), 'must be comma-separated host or host:port entries')
    .default(''),
  /** containers-auth.json with registry credentials, handed to skopeo only. */
  ZVIZ_REGISTRY_AUTH_FILE: z.string().regex(/^\//, 'must be an absolute path').optional(),
  /** Most MiB of one image: its compressed layers, and its unpacked tree, each. */
  ZVIZ_IMAGE_MAX_MB: int(1, 1_048_576).default(2048),
  /** Most layers of one image. */
  ZVIZ_IMAGE_MAX_LAYERS: int(1, 1000).default(64),
  /** Unpacked registry images kept, in MiB; beyond it the least recently used unused ones go. */
  ZVIZ_IMAGE_CACHE_MB: int(0, 16_777_216).default(10_240),
  /** Largest body POST /uploads takes, in MiB (a tenant's maxUploadMb quota may lower it). */
  ZVIZ_MAX_UPLOAD_MB: int(1, 65_536).default(64),
  /** A tenant's uploads stored on this host together, in MiB (a tenant's maxUploadStoreMb quota replaces it). */
  ZVIZ_MAX_UPLOAD_STORE_MB: int(1, 16_777_216).default(1024),
  /** CI jobs (POST /jobs) this server runs at once; more are refused with OVERLOADED. */
  ZVIZ_MAX_JOBS: int(0, 1024).default(4),
  /** The tail of each job's log that is kept (live and after the end), in KiB. */
  ZVIZ_JOB_LOG_KB: int(16, 1_048_576).default(1024),
  /** Job caches a tenant may keep on this host, in MiB; the least recently used go first. */
  ZVIZ_JOB_CACHE_MB: int(0, 16_777_216).default(2048),
  /** A job cache not used for this long is removed, in seconds. */
  ZVIZ_JOB_CACHE_TTL_S: int(60, 31_536_000).default(604_800),
  /** Artifact archives a tenant may keep on this host; the oldest go first. */
  ZVIZ_JOB_ARTIFACTS_MAX: int(1, 1_000_000).default(1000),
  /**
   * Where jobs of a profile with jobs.egressFromConfig may connect: comma-separated
   * `[udp:]<IPv4 CIDR>[:<port>[+<port>…]]` (no port: every port). Unset: the profile's own network.
   */
  ZVIZ_JOB_EGRESS: z
    .string()
    .refine((v) => parseJobEgress(v) !== null, { error: 'must be comma-separated [udp:]<IPv4 CIDR>[:<port>[+<port>…]] entries' })
    .optional(),
  /** The resolver jobs with ZVIZ_JOB_EGRESS may query (port 53), an IPv4 address. */
  ZVIZ_JOB_DNS: z.string().regex(/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/, 'must be an IPv4 address').optional(),
  /** Largest archive a function may be deployed from, in MiB; unpacked it may be 4 times that. */
  ZVIZ_MAX_BUNDLE_MB: int(1, 65_536).default(64),
  /** Where bundles are unpacked, one read-only tree per digest; every ancestor must be searchable by others. */
  ZVIZ_BUNDLE_CACHE_DIR: z.string().regex(/^\//, 'must be an absolute path').default('/var/cache/zviz/bundles'),
  /** Bundle trees and upload blobs kept on this host, in MiB; beyond it the least recently used that no function names go. */
  ZVIZ_BUNDLE_CACHE_MB: int(0, 16_777_216).default(10_240),
  /** S3-compatible object store shared by a fleet (unset: uploads stay on this host). */
  ZVIZ_S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,62}$/, 'must be a bucket name').optional(),
  ZVIZ_S3_ENDPOINT: z.string().regex(/^https?:\/\/[^\s]+$/, 'must be an http:// or https:// URL').optional(),
  ZVIZ_S3_REGION: z.string().min(1).max(64).default('us-east-1'),
  ZVIZ_S3_PREFIX: z.string().regex(/^([A-Za-z0-9._-]+\/)*$/, 'must be empty or path components ending with /').default(''),
  ZVIZ_S3_ACCESS_KEY_ID: z.string().min(1).max(256).optional(),
  ZVIZ_S3_SECRET_ACCESS_KEY: z.string().min(1).max(512).optional(),
  /** 1: path-style URLs (endpoint/bucket/key), what self-hosted stores need; 0: virtual-host style. */
  ZVIZ_S3_FORCE_PATH_STYLE: z.enum(['0', '1']).default('1'),
});

const REGISTRY_HOST = /^[a-z0-9.-]+(:[0-9]{1,5})?$/;

/** Variables whose value must never be echoed, even in an error message. */
const SECRET_VARIABLES = new Set(['ZVIZ_ADMIN_TOKEN', 'ZVIZ_REDIS_URL', 'ZVIZ_S3_SECRET_ACCESS_KEY']);

export interface Config {
  host: string;
  port: number;
  stateDir: string;
  profilesDir: string;
  runtimesDir: string;
  maxSandboxes: number;
  maxQueue: number;
  uidBase: number;
  drainMs: number;
  drainNoticeMs: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  net: { routerNetns: string | null; pool: string; uplink: string | null };
  warm: { maxSandboxes: number; budgetMb: number; maxPerPool: number; concurrency: number; idleMs: number };
  allowTestProfiles: boolean;
  redisUrl: string | null;
  redisServer: string;
  adminToken: string | null;
  metricsPort: number | null;
  auditKeep: number;
  leaseSlackMs: number;
  resultTtlS: number;
  callbackHosts: string[];
  callbackTimeoutMs: number;
  images: {
    registries: string[];
    insecureRegistries: string[];
    authFile: string | null;
    maxImageMb: number;
    maxLayers: number;
    cacheMb: number;
  };
  maxUploadBytes: number;
  maxUploadStoreBytes: number;
  maxBundleBytes: number;
  bundleCacheDir: string;
  /** ZVIZ_BUNDLE_CACHE_MB in bytes (server/functions/bundle-gc.ts). */
  bundleCacheBytes: number;
  /** Null: no shared object store. */
  s3: S3Config | null;
  jobs: {
    maxJobs: number;
    logBytes: number;
    /** Per tenant: ZVIZ_JOB_CACHE_MB in bytes, ZVIZ_JOB_CACHE_TTL_S, ZVIZ_JOB_ARTIFACTS_MAX. */
    cacheBytes: number;
    cacheTtlS: number;
    maxArtifacts: number;
    /** ZVIZ_JOB_EGRESS and ZVIZ_JOB_DNS; null: unset. */
    egress: { allow: JobEgressRule[]; dns: string | null } | null;
  };
}

export interface JobEgressRule {
  cidr: string;
  ports: number[];
  protocol: 'tcp' | 'udp';
}

const CIDR4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/([0-9]|[12]\d|3[0-2])$/;

/** ZVIZ_JOB_EGRESS as the egress allowlist of a profile's network; null when malformed. */
export function parseJobEgress(value: string): JobEgressRule[] | null {
  const out: JobEgressRule[] = [];
  for (const raw of value.split(',').map((e) => e.trim()).filter((e) => e !== '')) {
    const udp = raw.startsWith('udp:');
    const rest = udp ? raw.slice(4) : raw.startsWith('tcp:') ? raw.slice(4) : raw;
    const [cidr, ports = ''] = rest.split(/:(.*)/s, 2) as [string, string?];
    if (!CIDR4.test(cidr)) return null;
    const list = ports === '' ? [] : ports.split('+').map(Number);
    if (list.some((p) => !Number.isInteger(p) || p < 1 || p > 65535) || list.length > 64) return null;
    out.push({ cidr, ports: list, protocol: udp ? 'udp' : 'tcp' });
  }
  return out.length > 0 && out.length <= 64 ? out : null;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty variables count as unset, as in a shell's ${VAR:-default}.
  const present = Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith('ZVIZ_') && v !== ''));
  const parsed = configSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? '');
      const value = present[key];
      const shown = SECRET_VARIABLES.has(key) ? `hidden (${value?.length ?? 0} characters)` : JSON.stringify(value);
      return `Invalid configuration: ${key} ${i.message}: current value is ${shown}`;
    });
    throw new ConfigError(lines.join('\n'));
  }
  const c = parsed.data;
  // Every running sandbox, its teardown and every warm sandbox wait on a thread of libuv's
  // pool (worker-pool/threadpool.cts), which has at most LIBUV_MAX.
  const threads = threadpoolNeed(c.ZVIZ_MAX_SANDBOXES, c.ZVIZ_WARM_MAX);
  if (threads > LIBUV_MAX) {
    throw new ConfigError(
      `Invalid configuration: ZVIZ_MAX_SANDBOXES (${c.ZVIZ_MAX_SANDBOXES}) and ZVIZ_WARM_MAX (${c.ZVIZ_WARM_MAX}) need ${threads} threads of libuv's pool ` +
        `(2 × ZVIZ_MAX_SANDBOXES + ZVIZ_WARM_MAX + ${THREADPOOL_MARGIN}), which has at most ${LIBUV_MAX}: lower either`,
    );
  }
  return {
    host: c.ZVIZ_HOST,
    port: c.ZVIZ_PORT,
    stateDir: c.ZVIZ_STATE_DIR,
    profilesDir: resolve(c.ZVIZ_PROFILES_DIR),
    runtimesDir: resolve(c.ZVIZ_RUNTIMES_DIR),
    maxSandboxes: c.ZVIZ_MAX_SANDBOXES,
    maxQueue: c.ZVIZ_MAX_QUEUE,
    uidBase: c.ZVIZ_UID_BASE,
    drainMs: c.ZVIZ_DRAIN_MS,
    drainNoticeMs: c.ZVIZ_DRAIN_NOTICE_MS,
    logLevel: c.ZVIZ_LOG_LEVEL,
    net: { routerNetns: c.ZVIZ_NET_ROUTER_NETNS ?? null, pool: c.ZVIZ_NET_POOL, uplink: c.ZVIZ_NET_UPLINK ?? null },
    allowTestProfiles: c.ZVIZ_ALLOW_TEST_PROFILES === '1',
    warm: {
      maxSandboxes: c.ZVIZ_WARM_MAX,
      budgetMb: c.ZVIZ_WARM_BUDGET_MB,
      maxPerPool: c.ZVIZ_WARM_PER_POOL,
      concurrency: c.ZVIZ_WARM_CONCURRENCY,
      idleMs: c.ZVIZ_WARM_IDLE_MS,
    },
    redisUrl: c.ZVIZ_REDIS_URL ?? null,
    redisServer: c.ZVIZ_REDIS_SERVER,
    adminToken: c.ZVIZ_ADMIN_TOKEN ?? null,
    metricsPort: c.ZVIZ_METRICS_PORT ?? null,
    auditKeep: c.ZVIZ_AUDIT_KEEP,
    leaseSlackMs: c.ZVIZ_LEASE_SLACK_MS,
    resultTtlS: c.ZVIZ_RESULT_TTL_S,
    callbackHosts: parseCallbackHosts(c.ZVIZ_CALLBACK_HOSTS),
    callbackTimeoutMs: c.ZVIZ_CALLBACK_TIMEOUT_MS,
    images: {
      registries: parseRegistryList(c.ZVIZ_IMAGE_REGISTRIES),
      insecureRegistries: parseRegistryList(c.ZVIZ_IMAGE_INSECURE_REGISTRIES),
      authFile: c.ZVIZ_REGISTRY_AUTH_FILE ?? null,
      maxImageMb: c.ZVIZ_IMAGE_MAX_MB,
      maxLayers: c.ZVIZ_IMAGE_MAX_LAYERS,
      cacheMb: c.ZVIZ_IMAGE_CACHE_MB,
    },
    maxUploadBytes: c.ZVIZ_MAX_UPLOAD_MB * 1024 * 1024,
    maxUploadStoreBytes: c.ZVIZ_MAX_UPLOAD_STORE_MB * 1024 * 1024,
    maxBundleBytes: c.ZVIZ_MAX_BUNDLE_MB * 1024 * 1024,
    bundleCacheDir: c.ZVIZ_BUNDLE_CACHE_DIR,
    bundleCacheBytes: c.ZVIZ_BUNDLE_CACHE_MB * 1024 * 1024,
    jobs: {
      maxJobs: c.ZVIZ_MAX_JOBS,
      logBytes: c.ZVIZ_JOB_LOG_KB * 1024,
      cacheBytes: c.ZVIZ_JOB_CACHE_MB * 1024 * 1024,
      cacheTtlS: c.ZVIZ_JOB_CACHE_TTL_S,
      maxArtifacts: c.ZVIZ_JOB_ARTIFACTS_MAX,
      egress: c.ZVIZ_JOB_EGRESS === undefined ? null : { allow: parseJobEgress(c.ZVIZ_JOB_EGRESS)!, dns: c.ZVIZ_JOB_DNS ?? null },
    },
    s3:
      c.ZVIZ_S3_BUCKET === undefined
        ? null
        : {
            bucket: c.ZVIZ_S3_BUCKET,
            endpoint: c.ZVIZ_S3_ENDPOINT ?? null,
            region: c.ZVIZ_S3_REGION,
            prefix: c.ZVIZ_S3_PREFIX,
            accessKeyId: c.ZVIZ_S3_ACCESS_KEY_ID ?? null,
            secretAccessKey: c.ZVIZ_S3_SECRET_ACCESS_KEY ?? null,
            forcePathStyle: c.ZVIZ_S3_FORCE_PATH_STYLE === '1',
          },
  };
}
