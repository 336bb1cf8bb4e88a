// Unpacking an uploaded archive (.tar, .tar.gz, .zip) into a fresh directory, with the care
// an image layer needs: the archive is parsed by well-kept libraries (node-tar, yauzl), and
// every entry is checked before anything is written. Refused, naming the entry: absolute
// paths, `..` components, entries through a symlink of the archive (symlink-then-write),
// symlinks and hard links that point out of the tree or through another link, device nodes
// and FIFOs, setuid/setgid bits, duplicates, and archives over the entry and size caps.
// What is written is owned by the server, mode 0644/0755 (0755 where any execute bit was
// set), so the tree can be shared read-only by every sandbox.
import { createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, symlink } from 'node:fs/promises';
import { posix, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import * as tar from 'tar';
import yauzl from 'yauzl';
import { ApiError } from '../http/errors.js';

export type ArchiveFormat = 'tar' | 'tar.gz' | 'zip';

export interface UnpackLimits {
  /** Sum of the entries' sizes once unpacked (a zip or gzip bomb stops here). */
  maxBytes: number;
  maxEntries: number;
}

export const DEFAULT_MAX_ENTRIES = 100_000;
const MAX_PATH_BYTES = 4096;
const MAX_LINK_TARGET = 4096;

type Kind = 'file' | 'dir' | 'symlink' | 'hardlink';

interface Entry {
  path: string;
  kind: Kind;
  /** Permission bits as the archive gives them (setuid/setgid already refused). */
  mode: number;
  size: number;
  /** Symlink target as written, or hard link target (a path in the archive). */
  target?: string;
}

/** The 400 for one entry; `entry` is what the archive calls it. */
export function refused(entry: string, why: string): ApiError {
  const shown = JSON.stringify(entry.length > 200 ? `${entry.slice(0, 200)}…` : entry);
  return new ApiError('ARCHIVE_REFUSED', `Cannot unpack archive: entry ${shown} ${why}`, { entry: entry.slice(0, 1024), reason: why });
}

/** The format by the first bytes: gzip (then tar inside), zip, or a ustar/GNU tar header. */
export async function sniffFormat(file: string): Promise<ArchiveFormat | null> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'tar.gz';
    if (bytesRead >= 4 && head.readUInt32LE(0) === 0x04034b50) return 'zip';
    if (bytesRead === 512 && head.toString('latin1', 257, 262) === 'ustar') return 'tar';
    return null;
  } finally {
    await fh.close();
  }
}

/** Canonical relative path of an entry (trailing slash of a directory dropped), or throws naming it. */
function entryPath(raw: string, reserved: readonly string[]): string {
  if (raw.includes('\0')) throw refused(raw, 'has a NUL character in its path');
  if (raw.includes('\\')) throw refused(raw, 'has a backslash in its path');
  if (raw.startsWith('/')) throw refused(raw, 'has an absolute path');
  if (Buffer.byteLength(raw) > MAX_PATH_BYTES) throw refused(raw, `has a path longer than ${MAX_PATH_BYTES} bytes`);
  const parts = raw.split('/').filter((p, i, all) => !(p === '' && i === all.length - 1) && p !== '.');
  if (parts.some((p) => p === '..')) throw refused(raw, "has a '..' component (path traversal)");
  if (parts.some((p) => p === '')) throw refused(raw, 'has an empty path component');
  if (parts.length === 0) return '';
  if (reserved.includes(parts[0]!)) throw refused(raw, `uses the reserved name '${parts[0]}'`);
  return parts.join('/');
}

function permBits(raw: string, mode: number): number {
  if (mode & 0o6000) throw refused(raw, 'has the setuid or setgid bit set');
  return mode & 0o777;
}

/** Lists and checks every entry of a tar archive (plain or gzip) without writing anything. */
async function listTar(file: string, gzip: boolean, reserved: readonly string[], limits: UnpackLimits): Promise<Entry[]> {
  const entries: Entry[] = [];
  let problem: ApiError | null = null;
  await tar.t({
    file,
    gzip,
    strict: true,
    onReadEntry(e) {
      if (problem !== null) return;
      try {
        entries.push(tarEntry(e, reserved));
        if (entries.length > limits.maxEntries) throw refused(e.path, `is one more than the ${limits.maxEntries} entries an archive may hold`);
      } catch (err) {
        problem = err instanceof ApiError ? err : refused(e.path, String(err));
      }
    },
  }).catch((e: unknown) => {
    if (problem === null) problem = new ApiError('ARCHIVE_REFUSED', `Cannot unpack archive: it is not a valid ${gzip ? 'tar.gz' : 'tar'} archive: ${String((e as Error).message ?? e)}`);
  });
  if (problem !== null) throw problem;
  return entries;
}

function tarEntry(e: tar.ReadEntry, reserved: readonly string[]): Entry {
  const raw = e.path;
  const path = entryPath(raw, reserved);
  const mode = permBits(raw, e.mode ?? 0o644);
  switch (e.type) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
      return { path, kind: 'file', mode, size: e.size ?? 0 };
    case 'Directory':
      return { path, kind: 'dir', mode, size: 0 };
    case 'SymbolicLink':
      return { path, kind: 'symlink', mode, size: 0, target: e.linkpath ?? '' };
    case 'Link':
      return { path, kind: 'hardlink', mode, size: 0, target: e.linkpath ?? '' };
    case 'CharacterDevice':
    case 'BlockDevice':
      throw refused(raw, 'is a device node');
    case 'FIFO':
      throw refused(raw, 'is a FIFO');
    default:
      throw refused(raw, `has an unsupported entry type '${e.type}'`);
  }
}

const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((res, rej) =>
    yauzl.open(file, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true, autoClose: false }, (err, zip) =>
      err ? rej(err) : res(zip),
    ),
  );
}

function readSmall(zip: yauzl.ZipFile, entry: yauzl.Entry, max: number): Promise<Buffer> {
  return new Promise((res, rej) =>
    zip.openReadStream(entry, (err, stream) => {
      if (err) return rej(err);
      const chunks: Buffer[] = [];
      let n = 0;
      stream.on('data', (c: Buffer) => {
        n += c.length;
        if (n > max) stream.destroy(new Error(`more than ${max} bytes`));
        else chunks.push(c);
      });
      stream.on('error', rej);
      stream.on('end', () => res(Buffer.concat(chunks)));
    }),
  );
}

/** Walks a zip's central directory; `each` gets every entry in order. */
async function walkZip(file: string, each: (zip: yauzl.ZipFile, e: yauzl.Entry, name: string) => Promise<void>): Promise<void> {
  let zip: yauzl.ZipFile;
  try {
    zip = await openZip(file);
  } catch (e) {
    throw new ApiError('ARCHIVE_REFUSED', `Cannot unpack archive: it is not a valid zip archive: ${(e as Error).message}`);
  }
  try {
    await new Promise<void>((res, rej) => {
      zip.on('error', rej);
      zip.on('end', () => res());
      zip.on('entry', (e: yauzl.Entry) => {
        const name = (e.fileName as unknown as Buffer).toString('utf8');
        each(zip, e, name).then(() => zip.readEntry(), rej);
      });
      zip.readEntry();
    });
  } catch (e) {
    if (e instanceof ApiError) throw e;
    throw new ApiError('ARCHIVE_REFUSED', `Cannot unpack archive: it is not a valid zip archive: ${(e as Error).message}`);
  } finally {
    zip.close();
  }
}

async function listZip(file: string, reserved: readonly string[], limits: UnpackLimits): Promise<Entry[]> {
  const entries: Entry[] = [];
  await walkZip(file, async (zip, e, raw) => {
    const path = entryPath(raw, reserved);
    // Unix attributes, when the archive was made on Unix; otherwise a plain file or directory.
    const unixMode = (e.externalFileAttributes >>> 16) & 0xffff;
    const type = unixMode & S_IFMT;
    const dir = raw.endsWith('/') || type === S_IFDIR;
    const mode = permBits(raw, unixMode === 0 ? (dir ? 0o755 : 0o644) : unixMode & 0o7777);
    if (type !== 0 && type !== S_IFREG && type !== S_IFDIR && type !== S_IFLNK) throw refused(raw, 'is a device node or another special file');
    if (type === S_IFLNK) {
      const target = (await readSmall(zip, e, MAX_LINK_TARGET)).toString('utf8');
      entries.push({ path, kind: 'symlink', mode, size: 0, target });
    } else {
      entries.push({ path, kind: dir ? 'dir' : 'file', mode, size: dir ? 0 : e.uncompressedSize });
    }
    if (entries.length > limits.maxEntries) throw refused(raw, `is one more than the ${limits.maxEntries} entries an archive may hold`);
  });
  return entries;
}

/**
 * The checks that need the whole list: the size cap, duplicates, links that lead out of
 * the tree or through another link, and entries written through a link.
 */
function checkTree(entries: readonly Entry[], limits: UnpackLimits): void {
  const links = new Set(entries.filter((e) => e.kind === 'symlink').map((e) => e.path));
  const files = new Set<string>();
  let bytes = 0;
  const throughLink = (path: string): string | null => {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if (links.has(prefix)) return prefix;
    }
    return null;
  };
  for (const e of entries) {
    if (e.path === '') continue;
    bytes += e.size;
    if (bytes > limits.maxBytes) throw refused(e.path, `takes the unpacked size over ${limits.maxBytes} bytes`);
    const via = throughLink(e.path);
    if (via !== null) throw refused(e.path, `is inside '${via}', which is a symlink of the archive`);
    if (e.kind !== 'dir') {
      if (files.has(e.path)) throw refused(e.path, 'appears twice in the archive');
      files.add(e.path);
    }
    if (e.kind === 'symlink') checkSymlink(e, links);
    if (e.kind === 'hardlink') {
      const t = e.target ?? '';
      if (t.startsWith('/')) throw refused(e.path, `is a hard link to an absolute path (${JSON.stringify(t)}): it points out of the archive`);
      let target: string;
      try {
        target = entryPath(t, []);
      } catch {
        throw refused(e.path, `is a hard link to ${JSON.stringify(t)}, which points out of the archive`);
      }
      const file = entries.find((x) => x.path === target);
      if (file === undefined || file.kind !== 'file') throw refused(e.path, `is a hard link to ${JSON.stringify(t)}, which is not a regular file of the archive`);
      if (throughLink(target) !== null) throw refused(e.path, `is a hard link through a symlink of the archive`);
    }
  }
}

/**
 * A symlink may only point to a relative path that, walked from the link's directory,
 * stays inside the tree and passes through no other symlink: a lexical check that no chain
 * of links can defeat, because every link of the tree is known before anything is written.
 */
function checkSymlink(e: Entry, links: ReadonlySet<string>): void {
  const t = e.target ?? '';
  const out = `is a symlink to ${JSON.stringify(t)}, which points out of the archive`;
  if (t === '' || t.includes('\0')) throw refused(e.path, 'is a symlink with an empty or invalid target');
  if (t.startsWith('/')) throw refused(e.path, `is a symlink to an absolute path (${JSON.stringify(t)}): it points out of the archive`);
  const stack = e.path.split('/').slice(0, -1);
  for (const part of t.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (stack.length === 0) throw refused(e.path, out);
      stack.pop();
      continue;
    }
    stack.push(part);
    const at = stack.join('/');
    if (links.has(at)) throw refused(e.path, `is a symlink to ${JSON.stringify(t)}, which goes through the symlink '${at}'`);
  }
}

export interface UnpackOptions {
  limits: UnpackLimits;
  /** Top-level names the archive may not use (they are the server's). */
  reserved?: readonly string[];
}

/** Lists and checks the archive; throws ARCHIVE_REFUSED naming the first bad entry. */
export async function checkArchive(file: string, opts: UnpackOptions): Promise<{ format: ArchiveFormat; entries: number; bytes: number }> {
  const format = await sniffFormat(file);
  if (format === null) throw new ApiError('ARCHIVE_REFUSED', 'Cannot unpack archive: it is not a .tar, .tar.gz or .zip archive');
  const reserved = opts.reserved ?? [];
  const entries = format === 'zip' ? await listZip(file, reserved, opts.limits) : await listTar(file, format === 'tar.gz', reserved, opts.limits);
  checkTree(entries, opts.limits);
  return { format, entries: entries.length, bytes: entries.reduce((n, e) => n + e.size, 0) };
}

/**
 * Unpacks `file` into `dest` (an empty directory the caller made and will rename or
 * remove): checks every entry first, then extracts, then gives every file and directory
 * its normalized mode. Throws ARCHIVE_REFUSED naming the entry; `dest` may then hold part
 * of the tree, which the caller removes.
 */
export async function unpackArchive(file: string, dest: string, opts: UnpackOptions): Promise<{ format: ArchiveFormat; entries: number; bytes: number }> {
  const checked = await checkArchive(file, opts);
  if (checked.format === 'zip') await extractZip(file, dest, opts.limits);
  else {
    await tar.x({
      file,
      cwd: dest,
      gzip: checked.format === 'tar.gz',
      strict: true,
      preserveOwner: false,
      // Belt and braces after checkTree: node-tar's own refusals stay on.
      preservePaths: false,
      noMtime: true,
      processUmask: 0o022,
    });
  }
  await normalizeModes(dest);
  return checked;
}

async function extractZip(file: string, dest: string, limits: UnpackLimits): Promise<void> {
  let total = 0;
  await walkZip(file, async (zip, e, raw) => {
    const path = entryPath(raw, []);
    if (path === '') return;
    const full = join(dest, ...path.split('/'));
    const unixMode = (e.externalFileAttributes >>> 16) & 0xffff;
    const type = unixMode & S_IFMT;
    if (raw.endsWith('/') || type === S_IFDIR) {
      await mkdir(full, { recursive: true, mode: 0o755 });
      return;
    }
    await mkdir(posix.dirname(full), { recursive: true, mode: 0o755 });
    if (type === S_IFLNK) {
      await symlink((await readSmall(zip, e, MAX_LINK_TARGET)).toString('utf8'), full);
      return;
    }
    const stream = await new Promise<NodeJS.ReadableStream>((res, rej) => zip.openReadStream(e, (err, s) => (err ? rej(err) : res(s))));
    // The sizes were checked from the central directory; yauzl checks the data matches them,
    // and this counter keeps a lying archive from writing more than the cap regardless.
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        total += chunk.length;
        done(total > limits.maxBytes ? refused(raw, `takes the unpacked size over ${limits.maxBytes} bytes`) : null, chunk);
      },
    });
    await pipeline(stream, counter, createWriteStream(full, { flags: 'wx', mode: unixMode & 0o111 ? 0o755 : 0o644 }));
  });
}

/** 0755 for directories and files with an execute bit, 0644 for other files; links untouched. */
async function normalizeModes(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const d of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, d.name);
    if (d.isDirectory()) await normalizeModes(full);
    else if (d.isFile()) {
      const st = await lstat(full);
      await chmod(full, st.mode & 0o111 ? 0o755 : 0o644);
    }
  }
}
