// The image store: OCI images unpacked once per manifest digest under
// $ZVIZ_STATE_DIR/images, shared read-only by every sandbox rooted in them.
//
//   images/                      0700 root: no sandbox uid on the host can reach into it
//     sha256-<hex>/rootfs/       the sanitized tree (native/src/image.c), never written again
//     sha256-<hex>/image.json    what ZViz knows of it (ImageRecord), written before the rename
//     .tmp-<pid>-<n>/            a pull in progress: skopeo's OCI layout, umoci's bundle
//     .lock-sha256-<hex>/pid     the one process unpacking that digest
//
// A pull is `skopeo inspect` (digest, caps) → `skopeo copy --preserve-digests` of exactly
// that digest into a staging OCI layout (skopeo verifies every blob against its digest)
// → `umoci unpack --rootless` → `zviz-supervisor --sanitize-image` → one rename into
// place. Anything that fails before the rename leaves only a .tmp folder, which the pull
// removes, and which the host's start-up sweep removes when its process died; a folder
// without image.json is never used. Registry credentials are only ever a file path
// handed to skopeo (ZVIZ_REGISTRY_AUTH_FILE): nothing here reads, logs or returns them.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Holds } from '../util/holds.js';
import { DIGEST_PATTERN, parseReference, pinnedReference, ReferenceError, registryAllowed, type ImageSource } from './reference.js';

export type ImageErrorCode =
  | 'INVALID_REFERENCE'
  | 'IMAGE_NOT_FOUND'
  | 'REGISTRY_NOT_ALLOWED'
  | 'REGISTRY_UNAVAILABLE'
  | 'IMAGE_TOO_LARGE'
  | 'IMAGE_INVALID'
  | 'IMAGE_IN_USE';

/** A pull or lookup that failed for a reason the caller can act on. */
export class ImageError extends Error {
  override name = 'ImageError';
  constructor(
    readonly code: ImageErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The image config's process, as the sandbox applies it. */
export interface ImageRunConfig {
  env: string[];
  entrypoint: string[];
  cmd: string[];
  workingDir: string;
  /** The image's User, resolved in its own /etc/passwd; 0 when it runs as root. */
  user: { uid: number; gid: number };
}

export interface ImageRecord {
  digest: string;
  /** Every reference it was pulled or imported under (tags, pinned names). */
  references: string[];
  /** A registry image can be fetched again by its pinned name; an import cannot. */
  origin: 'registry' | 'import';
  /** Pinned reference (registry/repo@digest) of a registry image. */
  pinned: string | null;
  sizeBytes: number;
  layers: number;
  config: ImageRunConfig;
  pulledAt: string;
}

export interface ImageStoreOptions {
  /** $ZVIZ_STATE_DIR/images */
  dir: string;
  /** ZVIZ_IMAGE_REGISTRIES: registry hosts pulls may use. */
  registries: readonly string[];
  /** ZVIZ_IMAGE_INSECURE_REGISTRIES: listed hosts spoken to over plain HTTP (loopback test registries). */
  insecureRegistries: readonly string[];
  /** ZVIZ_REGISTRY_AUTH_FILE: containers-auth.json the operator provides; null: anonymous. */
  authFile: string | null;
  /** ZVIZ_IMAGE_MAX_MB: most bytes of an image, compressed layers and unpacked tree each. */
  maxImageMb: number;
  /** ZVIZ_IMAGE_MAX_LAYERS */
  maxLayers: number;
  /** ZVIZ_IMAGE_CACHE_MB: registry images beyond this, least recently used first, are collected. */
  cacheMb: number;
  /**
   * The digests GC must never remove: every image a stored version of a deployed function is
   * pinned to (read from the function store every host of a fleet shares), and the images
   * of the catalog's languages. Rejects when it cannot say: GC then removes nothing.
   * Absent (the command line's store, which has no function store to ask): GC removes
   * nothing either; the server's store collects.
   */
  pinned?: () => Promise<ReadonlySet<string>>;
  /** The zviz-supervisor binary (it sanitizes unpacked trees). */
  supervisor: string;
  /** Longest one skopeo or umoci step may take. */
  stepTimeoutMs?: number;
}

/** What one collection did, and where the store stands after it (the server logs and exports it). */
export interface GcOutcome {
  removed: string[];
  /** Bytes of every image left in the store. */
  bytes: number;
  /** Of those, the bytes of pinned images: GC never removes them, even over the budget. */
  pinnedBytes: number;
  budgetBytes: number;
  /** Set when the pinned digests could not be read: nothing was removed. */
  error: string | null;
}

/** Progress of a pull: `layers` blobs of `total` copied, then the unpack. */
export interface PullProgress {
  phase: 'resolving' | 'copying' | 'unpacking' | 'done';
  layersDone: number;
  layersTotal: number;
}

const MiB = 1024 * 1024;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const INDEXES = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'];

interface Inspected {
  digest: string;
  layers: number;
  skopeoRef: string;
  ociManifest: boolean;
}

const dirName = (digest: string) => digest.replace(':', '-');

function run(cmd: string, args: string[], timeoutMs: number, onLine?: (line: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * MiB, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' } }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr: String(stderr) }));
      else resolve(String(stdout));
    });
    if (onLine) {
      let buf = '';
      child.stdout?.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop() ?? '';
        lines.forEach(onLine);
      });
    }
  });
}

/** skopeo's error text, first line, as an ImageError. Never carries credentials: skopeo prints none. */
function skopeoError(e: unknown, what: string): ImageError {
  const text = String((e as { stderr?: string }).stderr ?? (e instanceof Error ? e.message : e));
  const line = (text.split('\n').find((l) => l.trim().length > 0) ?? 'failed').replace(/^time="[^"]*" level=\w+ msg="?/, '').slice(0, 300);
  if ((e as { killed?: boolean }).killed) return new ImageError('REGISTRY_UNAVAILABLE', `Cannot fetch ${what}: timed out`);
  if (/manifest unknown|not found|no such file|does not exist|name unknown/i.test(text)) return new ImageError('IMAGE_NOT_FOUND', `Image ${what} not found: ${line}`);
  if (/unauthorized|authentication required|denied|401|403/i.test(text)) return new ImageError('REGISTRY_UNAVAILABLE', `Registry refused access to ${what}: check the registry credentials`);
  if (/connection refused|no such host|i\/o timeout|dial tcp|server gave HTTP response|tls:|connection reset|EOF/i.test(text)) {
    return new ImageError('REGISTRY_UNAVAILABLE', `Registry unavailable for ${what}: ${line}`);
  }
  if (/digest|checksum|did not match/i.test(text)) return new ImageError('IMAGE_INVALID', `Image ${what} refused: its content does not match its digest`);
  return new ImageError('IMAGE_INVALID', `Cannot read image ${what}: ${line}`);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes what dead pulls left: staging folders and locks whose process is gone, and image
 * folders without image.json (never used). Safe while live pulls run. Returns the names removed.
 */
export function sweepImages(dir: string, alive: (pid: number) => boolean = pidAlive): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return []; // no store yet: nothing to sweep
  }
  const removed: string[] = [];
  for (const name of names) {
    let dead = false;
    const tmp = /^\.tmp-(\d+)-/.exec(name);
    if (tmp) dead = !alive(Number(tmp[1]));
    else if (name.startsWith('.lock-')) {
      const pid = Number(readText(join(dir, name, 'pid')) ?? 'NaN');
      dead = !Number.isInteger(pid) || !alive(pid);
    } else if (/^sha256-[a-f0-9]{64}$/.test(name)) dead = !existsSync(join(dir, name, 'image.json'));
    if (!dead) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null; // absent or unreadable: the caller treats it as missing
  }
}

function readRecord(dir: string, digest: string): ImageRecord | null {
  const text = readText(join(dir, dirName(digest), 'image.json'));
  return text === null ? null : (JSON.parse(text) as ImageRecord);
}

/** The records of a store folder, read without opening (or creating) the store: `zviz doctor` reads them. */
export function storedImages(dir: string): ImageRecord[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return []; // no store (yet), or the folder vanished: nothing stored
  }
  return names
    .filter((n) => /^sha256-[a-f0-9]{64}$/.test(n))
    .map((n) => readRecord(dir, n.replace('-', ':')))
    .filter((r): r is ImageRecord => r !== null);
}

export class ImageStore {
  private readonly inFlight = new Map<string, Promise<ImageRecord>>();
  private readonly inUse = new Holds<string>();
  private readonly evictionListeners: Array<(record: ImageRecord) => void> = [];
  private readonly gcListeners: Array<(outcome: GcOutcome) => void> = [];
  private seq = 0;

  constructor(readonly options: ImageStoreOptions) {
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  }

  private get timeout(): number {
    return this.options.stepTimeoutMs ?? 600_000;
  }

  private skopeoArgs(source: ImageSource, src = true): string[] {
    const args: string[] = [];
    if (this.options.authFile) args.push(src ? '--authfile' : '--src-authfile', this.options.authFile);
    if (source.transport === 'docker' && this.options.insecureRegistries.includes(source.registry.toLowerCase())) {
      args.push(src ? '--tls-verify=false' : '--src-tls-verify=false');
    }
    return args;
  }

  /** The record of an image in the store, by digest or by a reference it was pulled under. */
  get(ref: string): ImageRecord | null {
    if (DIGEST_PATTERN.test(ref)) return this.read(ref);
    return this.list().find((r) => r.references.includes(ref) || r.pinned === ref) ?? null;
  }

  /**
   * Like get, under either spelling of a registry reference (with or without `docker://`):
   * how every user of a reference finds its image (an invocation, the catalog, collection).
   */
  find(ref: string): ImageRecord | null {
    return this.get(ref) ?? this.get(ref.startsWith('docker://') ? ref.slice('docker://'.length) : `docker://${ref}`);
  }

  /** Like find, or IMAGE_NOT_FOUND. */
  resolve(ref: string): ImageRecord {
    const r = this.find(ref);
    if (!r) throw new ImageError('IMAGE_NOT_FOUND', `Image ${JSON.stringify(ref)} is not in this host's image store: an operator pulls it with POST /admin/images`);
    return r;
  }

  list(): ImageRecord[] {
    return storedImages(this.options.dir);
  }

  private read(digest: string): ImageRecord | null {
    return readRecord(this.options.dir, digest);
  }

  /** The host directory of an image's tree (for the sandbox spec). */
  rootfs(digest: string): string {
    return join(this.options.dir, dirName(digest), 'rootfs');
  }

  /** Marks an image in use by a sandbox until the returned function is called (GC and rm skip it). */
  acquire(digest: string): () => void {
    const release = this.inUse.take(digest);
    try {
      const now = new Date();
      utimesSync(join(this.options.dir, dirName(digest), 'image.json'), now, now);
    } catch {
      // removed meanwhile: the sandbox fails to mount it and says so
    }
    return release;
  }

  /** Removes an image; false if it was not there. IMAGE_IN_USE while a sandbox of this process uses it. */
  remove(digest: string): boolean {
    if (!DIGEST_PATTERN.test(digest)) throw new ImageError('INVALID_REFERENCE', `Invalid image digest ${JSON.stringify(digest.slice(0, 100))}: expected sha256:<64 hex>`);
    if (this.inUse.has(digest)) throw new ImageError('IMAGE_IN_USE', `Image ${digest} is in use by a running sandbox`);
    const dir = join(this.options.dir, dirName(digest));
    if (!existsSync(join(dir, 'image.json'))) return false;
    // Rename first: the image stops being usable at once, the tree goes after.
    const doomed = join(this.options.dir, `.tmp-${process.pid}-rm-${this.seq++}`);
    renameSync(dir, doomed);
    rmSync(doomed, { recursive: true, force: true });
    return true;
  }

  /** Calls `listener` with each image GC removes (the server audits them). */
  onEvict(listener: (record: ImageRecord) => void): void {
    this.evictionListeners.push(listener);
  }

  /** Calls `listener` after each collection (the server warns when pinned images alone exceed the budget). */
  onCollected(listener: (outcome: GcOutcome) => void): void {
    this.gcListeners.push(listener);
  }

  /**
   * Registry images beyond the cache budget, least recently used first; never one in use,
   * `keep` (a pull's own) or a pinned one. Imports are never collected: they cannot be
   * fetched again. When what is left cannot be collected the store stays over its budget.
   */
  async gc(keep: string | null = null): Promise<GcOutcome> {
    const budgetBytes = this.options.cacheMb * MiB;
    let pinned: ReadonlySet<string> = new Set();
    let error: string | null = null;
    try {
      if (!this.options.pinned) throw new Error('this store cannot tell which images deployed functions pin: only the server collects');
      pinned = await this.options.pinned();
    } catch (e) {
      error = e instanceof Error ? e.message : String(e);
    }
    // Listed after the pinned set is read: an image pulled meanwhile is seen with its pin.
    const all = this.list().map((r) => ({ r, used: this.lastUsed(r.digest) }));
    let bytes = all.reduce((s, x) => s + x.r.sizeBytes, 0);
    const removed: string[] = [];
    const candidates = error !== null ? [] : all.filter((x) => x.r.origin === 'registry' && !pinned.has(x.r.digest)).sort((a, b) => a.used - b.used);
    for (const { r } of candidates) {
      if (bytes <= budgetBytes) break;
      if (this.inUse.has(r.digest) || r.digest === keep) continue;
      if (this.remove(r.digest)) {
        bytes -= r.sizeBytes;
        removed.push(r.digest);
        for (const listener of this.evictionListeners) listener(r);
      }
    }
    const pinnedBytes = all.filter((x) => pinned.has(x.r.digest)).reduce((s, x) => s + x.r.sizeBytes, 0);
    const outcome: GcOutcome = { removed, bytes, pinnedBytes, budgetBytes, error };
    for (const listener of this.gcListeners) listener(outcome);
    return outcome;
  }

  private lastUsed(digest: string): number {
    try {
      return statSync(join(this.options.dir, dirName(digest), 'image.json')).mtimeMs;
    } catch {
      return 0; // removed meanwhile: first in line, and remove() finds nothing
    }
  }

  /**
   * Pulls (docker://) or imports (oci:, oci-archive:, docker-archive:) an image and returns its
   * record. Concurrent pulls of one digest, in this process or another, unpack it once.
   */
  async pull(ref: string, onProgress?: (p: PullProgress) => void): Promise<ImageRecord> {
    return (await this.begin(ref, onProgress)).finished;
  }

  /**
   * A pull in two steps: what is refused at once (a bad reference, a registry not allowed
   * or unreachable, an unknown image, one over the caps) rejects this promise; the copy and
   * unpack then run on in `finished`. `stored` is set when the digest is already here.
   */
  async begin(ref: string, onProgress?: (p: PullProgress) => void): Promise<{ digest: string; stored: ImageRecord | null; finished: Promise<ImageRecord> }> {
    let source: ImageSource;
    try {
      source = parseReference(ref);
    } catch (e) {
      if (e instanceof ReferenceError) throw new ImageError('INVALID_REFERENCE', e.message);
      throw e;
    }
    if (!registryAllowed(source, this.options.registries)) {
      throw new ImageError('REGISTRY_NOT_ALLOWED', `Registry ${source.transport === 'docker' ? source.registry : ''} is not in ZVIZ_IMAGE_REGISTRIES`);
    }
    onProgress?.({ phase: 'resolving', layersDone: 0, layersTotal: 0 });
    const { digest, layers, skopeoRef, ociManifest } = await this.inspect(source, ref);
    const existing = this.read(digest);
    if (existing) {
      const stored = this.addReference(existing, ref);
      return { digest, stored, finished: Promise.resolve(stored) };
    }
    let pending = this.inFlight.get(digest);
    if (!pending) {
      pending = this.unpackOnce(source, ref, { digest, layers, skopeoRef, ociManifest }, onProgress).finally(() => this.inFlight.delete(digest));
      this.inFlight.set(digest, pending);
    }
    return { digest, stored: null, finished: pending.then((record) => this.addReference(record, ref)) };
  }

  private addReference(record: ImageRecord, ref: string): ImageRecord {
    if (record.references.includes(ref)) return record;
    const updated = { ...record, references: [...record.references, ref] };
    this.writeRecord(join(this.options.dir, dirName(record.digest)), updated);
    return updated;
  }

  private writeRecord(dir: string, record: ImageRecord): void {
    const tmp = join(dir, `.image.json.${process.pid}`);
    writeFileSync(tmp, JSON.stringify(record, null, 2), { mode: 0o600 });
    renameSync(tmp, join(dir, 'image.json'));
  }

  /** The manifest digest and layer count of what `source` names now, within the caps. */
  private async inspect(source: ImageSource, ref: string): Promise<Inspected> {
    let skopeoRef = source.skopeo;
    let raw: string;
    try {
      raw = await run('skopeo', ['inspect', '--raw', ...this.skopeoArgs(source), skopeoRef], this.timeout);
    } catch (e) {
      throw skopeoError(e, ref);
    }
    let manifest = JSON.parse(raw) as { mediaType?: string; manifests?: Array<{ digest: string; platform?: { os?: string; architecture?: string } }>; layers?: Array<{ size?: number }>; config?: { size?: number } };
    if (INDEXES.includes(manifest.mediaType ?? '') || Array.isArray(manifest.manifests)) {
      // A multi-platform index: this host's platform, fetched by its digest.
      const entry = manifest.manifests?.find((m) => m.platform?.os === 'linux' && m.platform?.architecture === 'amd64');
      if (!entry || source.transport !== 'docker' || !DIGEST_PATTERN.test(entry.digest)) throw new ImageError('IMAGE_INVALID', `Image ${ref} has no linux/amd64 manifest`);
      skopeoRef = `docker://${source.registry}/${source.repository}@${entry.digest}`;
      try {
        raw = await run('skopeo', ['inspect', '--raw', ...this.skopeoArgs(source), skopeoRef], this.timeout);
      } catch (e) {
        throw skopeoError(e, ref);
      }
      manifest = JSON.parse(raw) as typeof manifest;
    }
    if (![MANIFEST, DOCKER_MANIFEST, undefined].includes(manifest.mediaType) || !Array.isArray(manifest.layers)) {
      throw new ImageError('IMAGE_INVALID', `Image ${ref} has an unsupported manifest type ${JSON.stringify(manifest.mediaType)}`);
    }
    const digest = `sha256:${createHash('sha256').update(raw).digest('hex')}`;
    if (source.transport === 'docker' && source.digest && skopeoRef === source.skopeo && source.digest !== digest) {
      throw new ImageError('IMAGE_INVALID', `Image ${ref} refused: the registry's manifest has digest ${digest}`);
    }
    const layers = manifest.layers.length;
    if (layers > this.options.maxLayers) throw new ImageError('IMAGE_TOO_LARGE', `Image ${ref} has ${layers} layers: at most ${this.options.maxLayers} (ZVIZ_IMAGE_MAX_LAYERS)`);
    const bytes = manifest.layers.reduce((s, l) => s + (l.size ?? 0), manifest.config?.size ?? 0);
    if (bytes > this.options.maxImageMb * MiB) {
      throw new ImageError('IMAGE_TOO_LARGE', `Image ${ref} is ${Math.ceil(bytes / MiB)} MiB compressed: at most ${this.options.maxImageMb} MiB (ZVIZ_IMAGE_MAX_MB)`);
    }
    // Copy exactly what was inspected: by digest from a registry.
    if (source.transport === 'docker') skopeoRef = `docker://${source.registry}/${source.repository}@${digest}`;
    return { digest, layers, skopeoRef, ociManifest: manifest.mediaType !== DOCKER_MANIFEST };
  }

  private async unpackOnce(source: ImageSource, ref: string, inspected: Inspected, onProgress?: (p: PullProgress) => void): Promise<ImageRecord> {
    const { digest, layers, skopeoRef, ociManifest } = inspected;
    const release = await this.lock(digest);
    const staging = join(this.options.dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      const done = this.read(digest); // another process finished it while we waited
      if (done) return done;
      mkdirSync(staging, { mode: 0o700 });
      const layout = join(staging, 'oci');
      let copied = 0;
      onProgress?.({ phase: 'copying', layersDone: 0, layersTotal: layers });
      try {
        // skopeo checks every blob against its digest as it copies; an OCI manifest is
        // kept byte for byte, a Docker one is converted (the store keys on the source's).
        await run('skopeo', ['copy', ...this.skopeoArgs(source, false), skopeoRef, `oci:${layout}:img`], this.timeout, (line) => {
          if (/^Copying blob/.test(line) && copied < layers) onProgress?.({ phase: 'copying', layersDone: ++copied, layersTotal: layers });
        });
      } catch (e) {
        throw skopeoError(e, ref);
      }
      const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
      const staged = index.manifests[0]?.digest ?? '';
      if (!DIGEST_PATTERN.test(staged) || (ociManifest && source.transport !== 'docker-archive' && staged !== digest)) {
        throw new ImageError('IMAGE_INVALID', `Image ${ref} refused: it changed while it was copied`);
      }
      onProgress?.({ phase: 'unpacking', layersDone: layers, layersTotal: layers });
      const bundle = join(staging, 'bundle');
      try {
        await run('umoci', ['--log', 'error', 'unpack', '--rootless', '--image', `${layout}:img`, bundle], this.timeout);
      } catch (e) {
        const line = String((e as { stderr?: string }).stderr ?? '').split('\n').find((l) => l.trim()) ?? 'failed';
        throw new ImageError('IMAGE_INVALID', `Cannot unpack image ${ref}: ${line.slice(0, 300)}`);
      }
      const rootfs = join(bundle, 'rootfs');
      let counts: { bytes: number };
      try {
        counts = JSON.parse(await run(this.options.supervisor, ['--sanitize-image', rootfs], this.timeout)) as { bytes: number };
      } catch (e) {
        const line = String((e as { stderr?: string }).stderr ?? '').trim().replace(/^zviz-supervisor: /, '');
        throw new ImageError('IMAGE_INVALID', `Image ${ref} refused: ${line.slice(0, 300)}`);
      }
      if (counts.bytes > this.options.maxImageMb * MiB) {
        throw new ImageError('IMAGE_TOO_LARGE', `Image ${ref} unpacks to ${Math.ceil(counts.bytes / MiB)} MiB: at most ${this.options.maxImageMb} MiB (ZVIZ_IMAGE_MAX_MB)`);
      }
      const record: ImageRecord = {
        digest,
        references: [ref],
        origin: source.transport === 'docker' ? 'registry' : 'import',
        pinned: source.transport === 'docker' ? pinnedReference(source, digest) : null,
        sizeBytes: counts.bytes,
        layers,
        config: runConfig(layout, bundle, staged),
        pulledAt: new Date().toISOString(),
      };
      const final = join(staging, 'final');
      mkdirSync(final, { mode: 0o755 });
      renameSync(rootfs, join(final, 'rootfs'));
      this.writeRecord(final, record);
      renameSync(final, join(this.options.dir, dirName(digest)));
      onProgress?.({ phase: 'done', layersDone: layers, layersTotal: layers });
      await this.gc(digest); // never the image this pull is about to hand out
      return record;
    } finally {
      rmSync(staging, { recursive: true, force: true });
      release();
    }
  }

  /** One process per digest: a lock folder holding the owner's pid; a dead owner's lock is taken over. */
  private async lock(digest: string): Promise<() => void> {
    const path = join(this.options.dir, `.lock-${dirName(digest)}`);
    for (;;) {
      try {
        mkdirSync(path, { mode: 0o700 });
        writeFileSync(join(path, 'pid'), String(process.pid));
        return () => rmSync(path, { recursive: true, force: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const pid = Number(readText(join(path, 'pid')) ?? 'NaN');
      if (Number.isInteger(pid) && pid > 0 && !pidAlive(pid)) {
        rmSync(path, { recursive: true, force: true });
        continue;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * The process an image asks for: the OCI config's Entrypoint and Cmd (kept apart: a
 * command replaces Cmd only), and what umoci resolved from it in the image's own
 * /etc/passwd (User → uid/gid) into the bundle's config.json: Env, WorkingDir.
 */
function runConfig(layout: string, bundle: string, digest: string): ImageRunConfig {
  const blob = (d: string) => readFileSync(join(layout, 'blobs', 'sha256', d.slice('sha256:'.length)), 'utf8');
  const manifest = JSON.parse(blob(digest)) as { config: { digest: string } };
  const cfg = (JSON.parse(blob(manifest.config.digest)) as { config?: { Entrypoint?: string[] | null; Cmd?: string[] | null } }).config ?? {};
  const rt = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as {
    process?: { env?: string[]; cwd?: string; user?: { uid?: number; gid?: number } };
  };
  const p = rt.process ?? {};
  return {
    env: (p.env ?? []).filter((e) => !e.startsWith('TERM=')),
    entrypoint: cfg.Entrypoint ?? [],
    cmd: cfg.Cmd ?? [],
    workingDir: p.cwd && p.cwd.startsWith('/') ? p.cwd : '/',
    user: { uid: p.user?.uid ?? 0, gid: p.user?.gid ?? 0 },
  };
}
