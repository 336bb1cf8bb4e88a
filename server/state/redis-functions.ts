// Deployed functions in Redis: `zviz:{<tenant>}:fn:<name>` (hash: latest version, its
// metadata, digest, createdAt), `zviz:{<tenant>}:fn:<name>:versions` (hash: version number →
// that version's spec and code, JSON, for the kept versions), `zviz:{<tenant>}:fns` (set of
// names) and `zviz:{<tenant>}:fnseq` (hash: the last version number given to each name, kept
// across deletes). Changes run as one Lua script each (./scripts.ts).
import { metaOf, parseStoredVersion, type FunctionMeta, type FunctionSpec, type FunctionStore, type FunctionVersion, type PutOptions, type PutOutcome, codeBytesOf } from '../functions/store.js';
import { keys, type RedisClient } from './redis.js';

/** The hash's `meta` with the hash's own `latest` and `createdAt` (the JSON is written before they are known). */
function fromHash(latest: string | null, meta: string | null, createdAt: string | null): FunctionMeta | null {
  if (latest === null || meta === null) return null;
  try {
    return { ...(JSON.parse(meta) as FunctionMeta), version: Number(latest), createdAt: createdAt ?? '' };
  } catch {
    return null; // not JSON: not metadata ZViz stored
  }
}

export class RedisFunctionStore implements FunctionStore {
  constructor(private readonly redis: RedisClient) {}

  async put(tenant: string, name: string, spec: FunctionSpec, digest: string, opts: PutOptions): Promise<PutOutcome> {
    const now = new Date().toISOString();
    const stored: Omit<FunctionVersion, 'name' | 'version'> = { ...spec, digest, codeBytes: codeBytesOf(spec.files), createdAt: now };
    const meta = metaOf({ ...stored, name, version: 0 }, '');
    const [outcome, n, createdAt] = await this.redis.zvizFnPut(
      keys.fn(tenant, name),
      keys.fnIndex(tenant),
      keys.fnSeq(tenant),
      keys.fnVersions(tenant, name),
      name,
      JSON.stringify(meta),
      JSON.stringify(stored),
      digest,
      opts.onlyIfChanged ? '1' : '0',
      opts.keepVersions,
      opts.maxFunctions,
      now,
    );
    if (outcome === 'too-many') return { outcome, count: n };
    if (outcome === 'created') return { outcome, meta: { ...meta, version: n, createdAt: createdAt ?? now } };
    if (outcome === 'unchanged') {
      const current = await this.get(tenant, name);
      if (current !== null) return { outcome, meta: current };
      // Deleted between the two calls: report what was there.
      return { outcome, meta: { ...meta, version: n, createdAt: createdAt ?? now } };
    }
    throw new Error(`Function script answered an unknown outcome: ${JSON.stringify(outcome)}`);
  }

  async get(tenant: string, name: string): Promise<FunctionMeta | null> {
    const [latest, meta, createdAt] = await this.redis.hmget(keys.fn(tenant, name), 'latest', 'meta', 'createdAt');
    return fromHash(latest ?? null, meta ?? null, createdAt ?? null);
  }

  async list(tenant: string): Promise<FunctionMeta[]> {
    const names = (await this.redis.smembers(keys.fnIndex(tenant))).sort();
    if (names.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const n of names) pipeline.hmget(keys.fn(tenant, n), 'latest', 'meta', 'createdAt');
    const out: FunctionMeta[] = [];
    for (const [err, row] of (await pipeline.exec()) ?? []) {
      if (err) throw err;
      const [latest, meta, createdAt] = row as Array<string | null>;
      const m = fromHash(latest ?? null, meta ?? null, createdAt ?? null);
      if (m !== null) out.push(m);
    }
    return out;
  }

  async remove(tenant: string, name: string): Promise<boolean> {
    const removed = await this.redis.zvizFnDelete(keys.fn(tenant, name), keys.fnIndex(tenant), keys.fnVersions(tenant, name), name);
    return removed === 1;
  }

  async latest(tenant: string, name: string): Promise<number | null> {
    const v = await this.redis.hget(keys.fn(tenant, name), 'latest');
    return v === null ? null : Number(v);
  }

  async version(tenant: string, name: string, version: number): Promise<FunctionVersion | null> {
    return parseStoredVersion(await this.redis.hget(keys.fnVersions(tenant, name), String(version)), name, version);
  }

  async bundleDigests(tenant: string): Promise<Set<string>> {
    return new Set((await this.#keptVersions(tenant)).flatMap((v) => (v.bundle ? [v.bundle.digest] : [])));
  }

  async imageDigests(tenant: string): Promise<Set<string>> {
    return new Set((await this.#keptVersions(tenant)).flatMap((v) => (v.image ? [v.image.digest] : [])));
  }

  /** Every version of the tenant's functions still stored: an invocation may name any of them. */
  async #keptVersions(tenant: string): Promise<FunctionVersion[]> {
    const names = await this.redis.smembers(keys.fnIndex(tenant));
    if (names.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const n of names) pipeline.hvals(keys.fnVersions(tenant, n));
    const out: FunctionVersion[] = [];
    for (const [err, texts] of (await pipeline.exec()) ?? []) {
      if (err) throw err;
      for (const text of texts as string[]) {
        const version = parseStoredVersion(text, '', 0);
        if (version !== null) out.push(version);
      }
    }
    return out;
  }
}
