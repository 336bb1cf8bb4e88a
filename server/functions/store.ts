// What a deployed function is once stored: one immutable version (its spec, digest and
// size), the metadata the API shows, the store contract (server/state/redis-functions.ts
// keeps them in Redis) and the in-memory cache of versions. A version number is never
// reused, so (tenant, name, version) names one content forever: caches and warm pools may
// key on it.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { limitsSchema, runtimeSchema, type Limits, type Runtime } from '../../profiles/schema.js';
import type { ReusePolicy } from '../../worker-pool/task.js';

const utf8 = (s: string) => Buffer.byteLength(s, 'utf8');

/** What one version is made of; its digest decides whether a redeploy changes anything. */
export interface FunctionSpec {
  runtime: Runtime;
  files: Record<string, string>;
  handler: string;
  profile: string;
  limits: Partial<Limits>;
  env: Record<string, string>;
  secrets: Record<string, string>;
  /**
   * A function whose root is an OCI image: pinned at deploy to the digest its reference had
   * then, run as `command` (or the image's Cmd) after its Entrypoint, with the shell's
   * handler contract (the event's JSON on stdin, the output's JSON on stdout). Absent: a
   * function of `runtime` from its files.
   */
  image?: FunctionImage;
  /** Deployed from an uploaded archive (server/functions/bundles.ts); `files` is then empty. */
  bundle?: { digest: string; bytes: number };
  /** Opted into reusable environments (worker-pool/reuse.ts); absent: every invocation is single-use. */
  reuse?: ReusePolicy;
}

export interface FunctionImage {
  digest: string;
  /** What the deploy named (a tag, a pinned name); informative: the digest is what runs. */
  reference: string;
  command?: string[];
}

/** One stored version: its spec and what was measured of it. */
export interface FunctionVersion extends FunctionSpec {
  name: string;
  version: number;
  digest: string;
  codeBytes: number;
  /** When this version was deployed. */
  createdAt: string;
}

export const functionMetaSchema = z.strictObject({
  name: z.string(),
  /** The latest version. */
  version: z.number().int(),
  runtime: runtimeSchema,
  handler: z.string(),
  profile: z.string(),
  limits: limitsSchema.partial(),
  env: z.record(z.string(), z.string()),
  secrets: z.record(z.string(), z.string()),
  /** Paths of the files, sorted (none for a bundle). */
  files: z.array(z.string()),
  /** The archive the function was deployed from, when it was. */
  bundle: z.strictObject({ digest: z.string(), bytes: z.number().int() }).optional(),
  codeBytes: z.number().int(),
  /** SHA-256 of the canonical spec: equal digests, equal functions. */
  digest: z.string(),
  /** When the name was first deployed (since its last delete). */
  createdAt: z.string(),
  /** When the latest version was deployed. */
  updatedAt: z.string(),
  /** An image function: the digest it is pinned to. */
  image: z.strictObject({ digest: z.string(), reference: z.string(), command: z.array(z.string()).optional() }).optional(),
  /** Reusable environments, as deployed; absent: never. */
  reuse: z.strictObject({ maxInvocations: z.number().int(), idleMs: z.number().int(), reset: z.enum(['tmp', 'none']) }).optional(),
});
export type FunctionMeta = z.infer<typeof functionMetaSchema>;

export function metaOf(v: FunctionVersion, createdAt: string): FunctionMeta {
  return {
    name: v.name,
    version: v.version,
    runtime: v.runtime,
    handler: v.handler,
    profile: v.profile,
    limits: v.limits,
    env: v.env,
    secrets: v.secrets,
    files: Object.keys(v.files).sort(),
    ...(v.bundle === undefined ? {} : { bundle: v.bundle }),
    codeBytes: v.codeBytes,
    digest: v.digest,
    createdAt,
    updatedAt: v.createdAt,
    ...(v.image ? { image: v.image } : {}),
    ...(v.reuse ? { reuse: v.reuse } : {}),
  };
}

/** JSON with object keys sorted at every level: one text per value, whatever the key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function digestOf(spec: FunctionSpec): string {
  return createHash('sha256').update(canonicalJson(spec), 'utf8').digest('hex');
}

export function codeBytesOf(files: Readonly<Record<string, string>>): number {
  return Object.values(files).reduce((n, c) => n + utf8(c), 0);
}

export type PutOutcome =
  | { outcome: 'created' | 'unchanged'; meta: FunctionMeta }
  | { outcome: 'too-many'; count: number };

export interface PutOptions {
  /** Make no new version when the latest has the same digest (idempotent deploys). */
  onlyIfChanged: boolean;
  maxFunctions: number;
  keepVersions: number;
}

/** Where functions live. Every method may reject when the store is unreachable. */
export interface FunctionStore {
  /** Stores a new version (numbered one past the last ever given to the name). */
  put(tenant: string, name: string, spec: FunctionSpec, digest: string, opts: PutOptions): Promise<PutOutcome>;
  get(tenant: string, name: string): Promise<FunctionMeta | null>;
  /** The tenant's functions, by name. */
  list(tenant: string): Promise<FunctionMeta[]>;
  /** Removes the function and every stored version of it; false when there was no such function. */
  remove(tenant: string, name: string): Promise<boolean>;
  /** The latest version number, or null when the function does not exist. */
  latest(tenant: string, name: string): Promise<number | null>;
  /** A stored version, or null when it is not (or no longer) stored. */
  version(tenant: string, name: string, version: number): Promise<FunctionVersion | null>;
  /** The bundle digests any stored version of the tenant's functions names (what bundle GC must keep). */
  bundleDigests(tenant: string): Promise<Set<string>>;
  /** The image digests any stored version of the tenant's functions is pinned to (what image GC must keep). */
  imageDigests(tenant: string): Promise<Set<string>>;
}

/** Parses a stored version; null when it is not one (a store must not trust what it reads). */
export function parseStoredVersion(text: string | null, name: string, version: number): FunctionVersion | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as Omit<FunctionVersion, 'name' | 'version'>;
    if (typeof v !== 'object' || v === null || typeof v.files !== 'object' || typeof v.handler !== 'string') return null;
    return { ...v, name, version };
  } catch {
    return null; // not JSON: not a version ZViz stored
  }
}

/**
 * Versions are immutable and their numbers never reused, so a version read once may be
 * kept: the cache spares each warm invocation a round trip carrying up to 1 MiB of code.
 * Bounded by the total size of the code it holds; least recently used goes first.
 */
export class VersionCache {
  readonly #entries = new Map<string, FunctionVersion>();
  #bytes = 0;

  constructor(private readonly maxBytes = 32 * 1024 * 1024) {}

  static key(tenant: string, name: string, version: number): string {
    return `${tenant}:${name}:${version}`;
  }

  get(key: string): FunctionVersion | undefined {
    const v = this.#entries.get(key);
    if (v !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, v);
    }
    return v;
  }

  set(key: string, v: FunctionVersion): void {
    if (v.codeBytes > this.maxBytes || this.#entries.has(key)) return;
    this.#entries.set(key, v);
    this.#bytes += v.codeBytes;
    for (const [k, old] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      this.#entries.delete(k);
      this.#bytes -= old.codeBytes;
    }
  }
}
