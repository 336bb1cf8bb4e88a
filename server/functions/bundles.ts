// Function bundles: an uploaded archive (server/uploads/) deployed as a function's code and
// unpacked once per digest into a read-only tree that every sandbox of every version using
// it mounts on /fn (worker-pool/task.ts: fnDir). The tree also carries the runtimes'
// bootstraps under .zviz/, a name no archive entry may use, because it covers the /fn the
// native layer would otherwise write them into; its directory name includes a hash of
// them, so a ZViz upgrade with new bootstraps unpacks afresh instead of mixing.
//
// The tree lives outside the state directory (ZVIZ_BUNDLE_CACHE_DIR): the sandbox's setup
// user, an unprivileged host uid, resolves the bind's source, so every ancestor must be
// searchable by others. It is a cache: any host rebuilds it from the blob (its own, or the
// shared object store's) the first time a version runs there.
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, rename, rm, stat, utimes, writeFile, chmod } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ApiError } from '../http/errors.js';
import type { Logger } from '../ops/log.js';
import { unpackArchive, DEFAULT_MAX_ENTRIES } from '../uploads/unpack.js';
import type { UploadStore } from '../uploads/store.js';
import { allBootstraps } from '../../worker-pool/runtime/index.js';
import { processAlive } from '../../worker-pool/host/pids.js';
import { Holds } from '../../worker-pool/util/holds.js';

/** Top-level names a bundle may not use: the bootstraps' directory. */
export const RESERVED_BUNDLE_NAMES = ['.zviz'] as const;
/** A bundle unpacked may be this many times its archive's size (compression, not a bomb). */
export const UNPACKED_FACTOR = 4;

export interface BundleOptions {
  uploads: UploadStore;
  cacheDir: string;
  maxBundleBytes: number;
  log: Logger;
}

/** An unpacked tree on this host, as the bundle collector (./bundle-gc.ts) sees it. */
export interface BundleTree {
  /** Its folder name in the cache directory. */
  name: string;
  digest: string;
  /** Made for this ZViz's bootstraps (an older ZViz's trees are never used by this one). */
  current: boolean;
  bytes: number;
  /** Last made or used (`tree`). */
  usedMs: number;
  /** A sandbox of this process has it mounted, or it is being unpacked. */
  inUse: boolean;
}

const TREE_NAME = /^([0-9a-f]{64})-([0-9a-f]{12})$/;

/** Bytes of the files under `dir` (a tree never changes once renamed into place). */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const dirs = [dir];
  for (let at = dirs.pop(); at !== undefined; at = dirs.pop()) {
    for (const e of await readdir(at, { withFileTypes: true }).catch(() => [])) {
      const path = join(at, e.name);
      if (e.isDirectory()) dirs.push(path);
      else if (e.isFile()) total += (await lstat(path).catch(() => null))?.size ?? 0;
    }
  }
  return total;
}

/** What a deploy records of its bundle. */
export interface BundleRef {
  digest: string;
  /** The archive's size. */
  bytes: number;
}

export class Bundles {
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #inUse = new Holds<string>();
  /** Sizes of trees seen, by folder name: trees are immutable. */
  readonly #sizes = new Map<string, number>();
  readonly #bootKey: string;

  constructor(private readonly opts: BundleOptions) {
    const h = createHash('sha256');
    for (const f of allBootstraps()) h.update(f.name).update('\0').update(f.content).update('\0');
    this.#bootKey = h.digest('hex').slice(0, 12);
  }

  /**
   * Checks that the sandbox's setup user can reach the cache directory (made at the first
   * unpack, so a server that never sees a bundle leaves nothing on the host) and removes
   * unpacks a dead process left half done. Throws naming the fix.
   */
  async open(): Promise<void> {
    const dir = this.opts.cacheDir;
    for (let at = dir; ; at = dirname(at)) {
      const mode = await stat(at).then((st) => st.mode, () => null);
      if (mode !== null && (mode & 0o001) === 0) {
        throw new Error(
          `Cannot use bundle cache directory ${dir}: ${at} is not searchable by other users (mode ${(mode & 0o777).toString(8)}), and sandboxes mount bundles from it as an unprivileged user (chmod o+x ${at}, or set ZVIZ_BUNDLE_CACHE_DIR)`,
        );
      }
      if (at === dirname(at)) break;
    }
    const names = await readdir(dir).catch(() => [] as string[]); // not made yet: nothing to sweep
    for (const name of names) {
      if (!name.startsWith('.tmp-')) continue;
      const pid = Number(name.split('-')[1]);
      if (Number.isInteger(pid) && pid > 0 && !processAlive(pid)) await rm(join(dir, name), { recursive: true, force: true });
    }
  }

  #treePath(digest: string): string {
    return join(this.opts.cacheDir, `${digest.slice('sha256:'.length)}-${this.#bootKey}`);
  }

  /**
   * At deploy: the tenant's upload exists and is within the bundle cap, unpacks (400 naming
   * a refused entry), and holds the handler as a regular file.
   */
  async prepare(tenant: string, digest: string, handler: string): Promise<BundleRef> {
    // The tenant's own upload first: a tree unpacked for another tenant's identical
    // upload must not let a tenant deploy a digest it never uploaded.
    const bytes = await this.#checkedSize(tenant, digest);
    const tree = await this.tree(tenant, digest);
    const st = await lstat(join(tree, ...handler.split('/'))).catch(() => null);
    if (st === null || !st.isFile()) {
      throw new ApiError('VALIDATION_FAILED', `Cannot deploy bundle: it has no regular file '${handler}' for the handler`, [
        { path: 'handler', message: `must name a regular file of the bundle: current value is '${handler}'` },
      ]);
    }
    return { digest, bytes };
  }

  /** The size of the tenant's upload: UNKNOWN_UPLOAD when it has none, 413 over the bundle cap. */
  async #checkedSize(tenant: string, digest: string): Promise<number> {
    const file = await this.opts.uploads.local(tenant, digest);
    if (file === null) {
      throw new ApiError('UNKNOWN_UPLOAD', `Cannot find upload ${digest}: tenant '${tenant}' has not uploaded it (POST /uploads first)`, { digest });
    }
    const size = (await stat(file)).size;
    const max = this.opts.maxBundleBytes;
    if (size > max) {
      throw new ApiError('PAYLOAD_TOO_LARGE', `Cannot deploy bundle: it must be at most ${max} bytes: current size is ${size} bytes`, { maxBytes: max, bytes: size });
    }
    return size;
  }

  /** The unpacked tree of a tenant's bundle on this host, made (once, whoever asks) when missing. */
  async tree(tenant: string, digest: string): Promise<string> {
    const final = this.#treePath(digest);
    // Touched on each use: the collector removes the least recently used first, and never
    // one used within its grace period (which covers the gap until `acquire`).
    if (await utimes(final, new Date(), new Date()).then(() => true, () => false)) return final;
    let p = this.#inflight.get(digest);
    if (p === undefined) {
      p = this.#unpack(tenant, digest, final).finally(() => this.#inflight.delete(digest));
      this.#inflight.set(digest, p);
    }
    return p;
  }

  /** Marks a tree in use by a sandbox until the returned function is called: the collector skips it. */
  acquire(tree: string): () => void {
    return this.#inUse.take(tree);
  }

  /** Whether an unpack of this digest runs in this process (it reads the digest's upload). */
  unpacking(digest: string): boolean {
    return this.#inflight.has(digest);
  }

  /** Every tree in the cache directory. */
  async trees(): Promise<BundleTree[]> {
    const out: BundleTree[] = [];
    for (const name of await readdir(this.opts.cacheDir).catch(() => [] as string[])) {
      const m = TREE_NAME.exec(name);
      if (m === null) continue;
      const path = join(this.opts.cacheDir, name);
      const st = await stat(path).catch(() => null);
      if (st === null || !st.isDirectory()) continue;
      let bytes = this.#sizes.get(name);
      if (bytes === undefined) this.#sizes.set(name, (bytes = await treeBytes(path)));
      const digest = `sha256:${m[1]!}`;
      out.push({ name, digest, current: m[2] === this.#bootKey, bytes, usedMs: st.mtimeMs, inUse: this.#inUse.has(path) || this.#inflight.has(digest) });
    }
    return out;
  }

  /**
   * Removes a tree: renamed to a .tmp- name of this process first (unusable at once; a
   * crash leaves a folder `open` removes), then deleted. False when it was not there.
   */
  async discard(name: string): Promise<boolean> {
    const doomed = join(this.opts.cacheDir, `.tmp-${process.pid}-rm-${randomBytes(6).toString('hex')}`);
    try {
      await rename(join(this.opts.cacheDir, name), doomed);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    this.#sizes.delete(name);
    await rm(doomed, { recursive: true, force: true });
    return true;
  }

  async #unpack(tenant: string, digest: string, final: string): Promise<string> {
    await this.#checkedSize(tenant, digest);
    const file = (await this.opts.uploads.local(tenant, digest))!;
    const max = this.opts.maxBundleBytes;
    await mkdir(this.opts.cacheDir, { recursive: true, mode: 0o711 });
    const tmp = join(this.opts.cacheDir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    await mkdir(tmp, { mode: 0o755 });
    try {
      const started = Date.now();
      const out = await unpackArchive(file, tmp, {
        limits: { maxBytes: max * UNPACKED_FACTOR, maxEntries: DEFAULT_MAX_ENTRIES },
        reserved: RESERVED_BUNDLE_NAMES,
      });
      await mkdir(join(tmp, '.zviz'), { mode: 0o755 });
      for (const f of allBootstraps()) await writeFile(join(tmp, ...f.name.split('/')), f.content, { mode: 0o644, flag: 'wx' });
      await chmod(tmp, 0o755);
      try {
        await rename(tmp, final);
      } catch (e) {
        // Another process of this host unpacked the same digest first: its tree is as good.
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
        await rm(tmp, { recursive: true, force: true });
      }
      this.opts.log.info('bundle unpacked', { digest, format: out.format, entries: out.entries, bytes: out.bytes, ms: Date.now() - started });
      return final;
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }
}
