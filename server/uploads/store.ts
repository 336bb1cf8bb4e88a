// Uploads: opaque blobs (archives) a tenant streams to POST /uploads, content-addressed by
// SHA-256 and kept per tenant, so a tenant can only ever name its own. A body is written to
// a part file while it is hashed and counted, never held in memory; over the cap it is
// refused (413) and the part file removed, so nothing half-written is ever named by a
// digest. With a remote store (S3-compatible, server/uploads/s3.ts) every blob is also put
// there before the upload is answered, and a host that has not seen a blob fetches it,
// verifying its digest, the first time it needs it: that is how a fleet sharing one Redis
// shares bundles. Reused by anything that takes an archive (bundles, CI workspaces and
// cache seeds).
//
// Each tenant's blobs on this host are also bounded together (ZVIZ_MAX_UPLOAD_STORE_MB, or
// the tenant's maxUploadStoreMb): see `receive`. They shrink when the tenant deletes one
// (DELETE /uploads/:digest, `remove`) or the bundle collector removes one (`discard`).
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { ApiError } from '../http/errors.js';
import { abortedBody, clientAborted } from '../http/validate.js';
import type { Logger } from '../ops/log.js';
import { errorMessage } from '../../worker-pool/util/errors.js';
import { processAlive } from '../../worker-pool/host/pids.js';
import { Holds } from '../../worker-pool/util/holds.js';

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;
export const digestSchema = z.string().regex(DIGEST_PATTERN, { error: 'must be an upload digest: sha256: and 64 lower-case hex digits' });

export const uploadSchema = z.strictObject({
  /** `sha256:<hex>` of the bytes as uploaded. */
  digest: z.string(),
  size: z.number().int(),
});
export type Upload = z.infer<typeof uploadSchema>;

/** Where blobs are shared between hosts. `get` resolves false when the key does not exist. */
export interface BlobRemote {
  readonly description: string;
  put(key: string, file: string, size: number): Promise<void>;
  get(key: string, destFile: string): Promise<boolean>;
}

/** What one upload may take: its own cap, and the tenant's stored-bytes budget (null: none). */
export interface ReceiveLimits {
  maxBytes: number;
  storeBytes: number | null;
  /** The request's Content-Length, when it declared one: refused before a byte is read when it cannot fit. */
  declaredBytes?: number;
}

/** A tenant's blobs on this host: their bytes together, and the largest one's. */
export interface TenantUsage {
  /** What the budget counts: each blob's size, at least CHARGED_MIN_BYTES. */
  bytes: number;
  largest: number;
  blobs: number;
}

export interface UploadStoreOptions {
  /** `<dir>/<tenant>/<hex>` are the blobs; `<dir>/.part` the uploads in progress. */
  dir: string;
  remote: BlobRemote | null;
  log: Logger;
  /** Blobs a tenant may keep on this host; default MAX_BLOBS_PER_TENANT. */
  maxBlobsPerTenant?: number;
}

const PART_DIR = '.part';

function hexOf(digest: string): string {
  return digest.slice('sha256:'.length);
}

/** A pass-through that hashes and counts, and fails with what `refuse` answers for the size so far. */
function hashingCounter(refuse: (size: number, chunk: number) => Error | null) {
  const hash = createHash('sha256');
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      const refusal = refuse(size, chunk.length);
      if (refusal !== null) return done(refusal);
      hash.update(chunk);
      done(null, chunk);
    },
  });
  return { stream, result: () => ({ digest: `sha256:${hash.digest('hex')}`, size }) };
}

/** A blob on this host, as the bundle collector (server/functions/bundle-gc.ts) sees it. */
export interface StoredBlob {
  tenant: string;
  digest: string;
  bytes: number;
  /** Last stored, fetched or used (`local`). */
  usedMs: number;
}

const now = () => new Date();

/**
 * The least a stored blob counts against the budget: a file takes an inode and a block
 * whatever its size, so a budget of bytes alone would let a tenant store millions of tiny ones.
 */
export const CHARGED_MIN_BYTES = 4096;
/** Blobs a tenant may keep on a host: every upload and every collection reads its folder. */
export const MAX_BLOBS_PER_TENANT = 4096;

/** The refusal of an upload the tenant's blob count cannot take. */
function tooManyBlobs(tenant: string, count: number, max: number): ApiError {
  return new ApiError(
    'QUOTA_UPLOAD_STORE',
    `Cannot store upload: tenant '${tenant}' may keep at most ${max} uploads on this host and keeps ${count}: delete uploads (DELETE /uploads/:digest) first`,
    { quota: 'uploads', maxUploads: max, uploads: count },
    { headers: { Connection: 'close' } },
  );
}

/** The refusal of an upload the tenant's stored-bytes budget cannot take. */
function storeFull(tenant: string, budget: number, used: number, size: number, known: boolean): ApiError {
  const sizeText = known ? `${size} bytes` : `at least ${size} bytes`;
  return new ApiError(
    'QUOTA_UPLOAD_STORE',
    `Cannot store upload: tenant '${tenant}' may keep at most ${budget} bytes of uploads on this host, ${used} are stored, and this one is ${sizeText}: delete uploads (DELETE /uploads/:digest) first`,
    { quota: 'maxUploadStoreMb', budgetBytes: budget, usedBytes: used, bytes: size },
    { headers: { Connection: 'close' } },
  );
}

export class UploadStore {
  readonly #inflight = new Map<string, Promise<string | null>>();
  /** Bytes each tenant is streaming to part files in this process right now. */
  readonly #streaming = new Map<string, number>();
  /** Per tenant: the end of the last budget check and placement, so two cannot interleave. */
  readonly #placing = new Map<string, Promise<unknown>>();
  /** Blobs a job is starting from (its workspace, a cache seed), by `tenant/digest`: how many hold each. */
  readonly #held = new Holds<string>();

  constructor(private readonly opts: UploadStoreOptions) {}

  get remote(): BlobRemote | null {
    return this.opts.remote;
  }

  /** Makes the directories and removes part files a dead process left. */
  async open(): Promise<void> {
    const parts = join(this.opts.dir, PART_DIR);
    await mkdir(parts, { recursive: true, mode: 0o700 });
    for (const name of await readdir(parts)) {
      const pid = Number(name.split('-')[0]);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !processAlive(pid)) await rm(join(parts, name), { force: true });
    }
  }

  #partPath(): string {
    return join(this.opts.dir, PART_DIR, `${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  #blobPath(tenant: string, digest: string): string {
    return join(this.opts.dir, tenant, hexOf(digest));
  }

  static remoteKey(tenant: string, digest: string): string {
    return `uploads/${tenant}/${hexOf(digest)}`;
  }

  /**
   * Streams `body` to disk under the tenant, at most `limits.maxBytes`. Resolves with its
   * digest and size once it is stored (locally and, if configured, remotely).
   *
   * The tenant's budget (`limits.storeBytes`) counts the bytes of its blobs on this host. A
   * blob it has already stored costs nothing again, and its digest is known only at the
   * end, so while streaming an upload is refused once it is over what the budget has left
   * (less what the tenant streams alongside) and either larger than its largest stored blob
   * (so it cannot be one of them) or not the tenant's only upload in flight; at the end,
   * under a per-tenant lock, one that is new and does not fit (in bytes, or in the count of
   * blobs) is refused. A refused upload's part file is removed.
   */
  async receive(tenant: string, body: ReadableStream<Uint8Array> | null, limits: ReceiveLimits): Promise<Upload & { created: boolean }> {
    if (body === null) throw new ApiError('VALIDATION_FAILED', 'Cannot store upload: the request has no body', [{ path: 'body', message: 'is required' }]);
    const { maxBytes, storeBytes: budget } = limits;
    const tooLarge = () =>
      new ApiError('PAYLOAD_TOO_LARGE', `Cannot store upload: it must be at most ${maxBytes} bytes`, { maxBytes }, { headers: { Connection: 'close' } });
    const start = budget === null ? null : await this.usage(tenant);
    let counted = 0;
    // What the tenant streams alongside this upload counts too, so parallel uploads cannot each take what is left.
    const others = () => (this.#streaming.get(tenant) ?? 0) - counted;
    // An upload no larger than the tenant's largest blob may be one it stored already (a
    // digest stored again costs nothing), so it is let through to the end, where the digest
    // is known; but only while it is the tenant's one upload in flight: parallel ones could
    // otherwise each take that much of the disk.
    const overBudget = (size: number) =>
      start !== null && budget !== null && start.bytes + others() + Math.max(size, CHARGED_MIN_BYTES) > budget && (size > start.largest || others() > 0);
    if (limits.declaredBytes !== undefined && overBudget(limits.declaredBytes)) {
      // The body is never read, so the connection cannot carry another request.
      throw storeFull(tenant, budget!, start!.bytes, limits.declaredBytes, true);
    }
    const part = this.#partPath();
    const counter = hashingCounter((size, chunk) => {
      this.#streaming.set(tenant, (this.#streaming.get(tenant) ?? 0) + chunk);
      counted += chunk;
      if (size > maxBytes) return tooLarge();
      return overBudget(size) ? storeFull(tenant, budget!, start!.bytes, size, false) : null;
    });
    try {
      await pipeline(Readable.fromWeb(body as import('node:stream/web').ReadableStream<Uint8Array>), counter.stream, createWriteStream(part, { flags: 'wx', mode: 0o600 }));
    } catch (e) {
      await rm(part, { force: true });
      if (e instanceof ApiError) throw e;
      if (clientAborted(e)) throw abortedBody();
      throw e;
    } finally {
      const left = (this.#streaming.get(tenant) ?? 0) - counted;
      if (left > 0) this.#streaming.set(tenant, left);
      else this.#streaming.delete(tenant);
    }
    const { digest, size } = counter.result();
    const created = await this.#underLock(tenant, async () => {
      if (budget !== null && !(await this.#exists(tenant, digest))) {
        const stored = await this.usage(tenant);
        if (stored.bytes + Math.max(size, CHARGED_MIN_BYTES) > budget) {
          await rm(part, { force: true });
          throw storeFull(tenant, budget, stored.bytes, size, true);
        }
        const maxBlobs = this.opts.maxBlobsPerTenant ?? MAX_BLOBS_PER_TENANT;
        if (stored.blobs >= maxBlobs) {
          await rm(part, { force: true });
          throw tooManyBlobs(tenant, stored.blobs, maxBlobs);
        }
      }
      return this.#place(part, tenant, digest);
    });
    if (this.opts.remote !== null) {
      try {
        await this.opts.remote.put(UploadStore.remoteKey(tenant, digest), this.#blobPath(tenant, digest), size);
      } catch (e) {
        this.opts.log.warn('cannot put upload to the remote store', { tenant, digest, remote: this.opts.remote.description, error: errorMessage(e) });
        throw new ApiError('UPLOAD_STORE_UNAVAILABLE', `Cannot store upload: the shared object store (${this.opts.remote.description}) did not take it: retry later`);
      }
    }
    return { digest, size, created };
  }

  /** Runs `fn` after every earlier call for the same tenant has settled. */
  async #underLock<T>(tenant: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#placing.get(tenant) ?? Promise.resolve();
    const mine = before.then(fn, fn);
    const settled = mine.catch(() => undefined);
    this.#placing.set(tenant, settled);
    void settled.then(() => {
      if (this.#placing.get(tenant) === settled) this.#placing.delete(tenant);
    });
    return mine;
  }

  async #exists(tenant: string, digest: string): Promise<boolean> {
    return (await stat(this.#blobPath(tenant, digest)).catch(() => null))?.isFile() ?? false;
  }

  /** The tenant's blobs on this host (what its stored-bytes budget counts). */
  async usage(tenant: string): Promise<TenantUsage> {
    const out: TenantUsage = { bytes: 0, largest: 0, blobs: 0 };
    for (const b of await this.#tenantBlobs(tenant)) {
      out.bytes += Math.max(b.bytes, CHARGED_MIN_BYTES);
      out.largest = Math.max(out.largest, b.bytes);
      out.blobs++;
    }
    return out;
  }

  /** Renames a verified part file to its digest's name; false when that blob was there already. */
  async #place(part: string, tenant: string, digest: string): Promise<boolean> {
    const final = this.#blobPath(tenant, digest);
    await mkdir(join(this.opts.dir, tenant), { recursive: true, mode: 0o700 });
    const existed = await utimes(final, now(), now()).then(() => true, () => false);
    if (existed) {
      // Touched: uploaded again is used again (the collector keeps fresh blobs).
      await rm(part, { force: true });
      return false;
    }
    await rename(part, final);
    return true;
  }

  /**
   * The local file of a tenant's blob, fetched from the remote store (and its digest
   * verified) when this host has not seen it; null when neither has it.
   */
  async local(tenant: string, digest: string): Promise<string | null> {
    const key = `${tenant}/${digest}`;
    let p = this.#inflight.get(key);
    if (p === undefined) {
      p = this.#local(tenant, digest).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    return p;
  }

  async #local(tenant: string, digest: string): Promise<string | null> {
    const final = this.#blobPath(tenant, digest);
    // Touched on each use: the collector removes the least recently used first.
    if (await utimes(final, now(), now()).then(() => true, () => false)) return final;
    const remote = this.opts.remote;
    if (remote === null) return null;
    const part = this.#partPath();
    let found: boolean;
    try {
      found = await remote.get(UploadStore.remoteKey(tenant, digest), part);
    } catch (e) {
      await rm(part, { force: true });
      this.opts.log.warn('cannot fetch upload from the remote store', { tenant, digest, remote: remote.description, error: errorMessage(e) });
      throw new ApiError('UPLOAD_STORE_UNAVAILABLE', `Cannot fetch upload ${digest}: the shared object store (${remote.description}) did not answer: retry later`);
    }
    if (!found) {
      await rm(part, { force: true });
      return null;
    }
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(part)) hash.update(chunk as Buffer);
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== digest) {
      await rm(part, { force: true });
      this.opts.log.error('remote blob does not match its digest', { tenant, digest, got, remote: remote.description });
      throw new ApiError('UPLOAD_STORE_UNAVAILABLE', `Cannot fetch upload ${digest}: the shared object store returned different content (${got}): refused`);
    }
    await this.#place(part, tenant, digest);
    return final;
  }

  /** Every blob on this host. */
  async blobs(): Promise<StoredBlob[]> {
    const out: StoredBlob[] = [];
    for (const tenant of await readdir(this.opts.dir).catch(() => [] as string[])) {
      if (tenant !== PART_DIR) out.push(...(await this.#tenantBlobs(tenant)));
    }
    return out;
  }

  async #tenantBlobs(tenant: string): Promise<StoredBlob[]> {
    const out: StoredBlob[] = [];
    for (const hex of await readdir(join(this.opts.dir, tenant)).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{64}$/.test(hex)) continue;
      const st = await stat(join(this.opts.dir, tenant, hex)).catch(() => null);
      if (st?.isFile()) out.push({ tenant, digest: `sha256:${hex}`, bytes: st.size, usedMs: st.mtimeMs });
    }
    return out;
  }

  /**
   * Removes a blob from this host (the shared store keeps its copy). Renamed into the part
   * folder first, so the blob is gone at once and a crash leaves only a part file, which
   * the next `open` removes. False when it was not there, or held: a job that took its hold
   * while the rename ran gets the blob back (a hold comes before the job looks for the file).
   */
  async discard(tenant: string, digest: string): Promise<boolean> {
    if (this.held(tenant, digest)) return false;
    const doomed = this.#partPath();
    const blob = this.#blobPath(tenant, digest);
    try {
      await rename(blob, doomed);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    if (this.held(tenant, digest)) {
      await rename(doomed, blob);
      return false;
    }
    await rm(doomed, { force: true });
    return true;
  }

  /**
   * Keeps a blob from removal (DELETE /uploads/:digest, the collector) until the returned
   * function is called: a job holds its workspace and cache seed from its admission until
   * they are unpacked. Calling it again does nothing.
   */
  hold(tenant: string, digest: string): () => void {
    return this.#held.take(`${tenant}/${digest}`);
  }

  held(tenant: string, digest: string): boolean {
    return this.#held.has(`${tenant}/${digest}`);
  }

  /**
   * Removes a tenant's blob from this host (DELETE /uploads/:digest): its size, null when
   * it was not there, 'held' while a job is starting from it.
   */
  async remove(tenant: string, digest: string): Promise<number | null | 'held'> {
    return this.#underLock(tenant, async () => {
      if (this.held(tenant, digest)) return 'held';
      const st = await stat(this.#blobPath(tenant, digest)).catch(() => null);
      if (st === null || !st.isFile()) return null;
      if (await this.discard(tenant, digest)) return st.size;
      return this.held(tenant, digest) ? 'held' : null;
    });
  }

  /** Size of a stored blob, or null. */
  async size(path: string): Promise<number> {
    return (await stat(path)).size;
  }
}
