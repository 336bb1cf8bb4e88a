// Test images built offline, byte by byte: a tar writer that can express what real
// tools refuse to write (`../` names, absolute paths, device nodes, hard links out) and
// an OCI image layout around its layers. The image store imports these with skopeo
// (`oci:` and `oci-archive:`) and pushes them to a loopback registry.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export type TarEntry =
  | { type: 'file'; name: string; content?: string | Buffer; mode?: number; uid?: number; gid?: number }
  | { type: 'dir'; name: string; mode?: number; uid?: number; gid?: number }
  | { type: 'symlink'; name: string; target: string }
  | { type: 'hardlink'; name: string; target: string }
  | { type: 'char' | 'block'; name: string; major: number; minor: number; mode?: number }
  | { type: 'fifo'; name: string };

const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' } as const;

function octal(v: number, width: number): string {
  return v.toString(8).padStart(width - 1, '0') + '\0';
}

function header(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number) => h.write(s.slice(0, len), off, 'latin1');
  if (Buffer.byteLength(e.name) > 100) throw new Error(`tar name too long for this writer: ${e.name}`);
  put(e.name, 0, 100);
  const mode = 'mode' in e && e.mode !== undefined ? e.mode : e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644;
  put(octal(mode, 8), 100, 8);
  put(octal('uid' in e && e.uid !== undefined ? e.uid : 0, 8), 108, 8);
  put(octal('gid' in e && e.gid !== undefined ? e.gid : 0, 8), 116, 8);
  put(octal(size, 12), 124, 12);
  put(octal(1_700_000_000, 12), 136, 12);
  put('        ', 148, 8);
  put(TYPEFLAG[e.type], 156, 1);
  if (e.type === 'symlink' || e.type === 'hardlink') put(e.target, 157, 100);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  if (e.type === 'char' || e.type === 'block') {
    put(octal(e.major, 8), 329, 8);
    put(octal(e.minor, 8), 337, 8);
  }
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return h;
}

/** A ustar archive of exactly these entries, in order. */
export function tar(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = e.type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0);
    parts.push(header(e, body.length), body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export interface ImageConfig {
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  User?: string;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Writes an OCI image layout at `dir` with one manifest tagged `tag`: each layer a
 * gzipped tar of its entries. Returns the manifest digest.
 */
export function writeOciLayout(dir: string, tag: string, layers: ReadonlyArray<readonly TarEntry[]>, config: ImageConfig = {}): string {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const blob = (b: Buffer) => {
    const h = sha(b);
    writeFileSync(join(blobs, h), b);
    return { digest: `sha256:${h}`, size: b.length };
  };
  const diffIds: string[] = [];
  const layerDescs = layers.map((entries) => {
    const raw = tar(entries);
    diffIds.push(`sha256:${sha(raw)}`);
    return { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...blob(gzipSync(raw)) };
  });
  const cfg = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', config, rootfs: { type: 'layers', diff_ids: diffIds }, history: [] }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...blob(cfg) },
      layers: layerDescs,
    }),
  );
  const m = blob(manifest);
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return m.digest;
}

/** A base layer with busybox-static and its applet links: a shell, ls, cat, id, … */
export function busyboxLayer(): TarEntry[] {
  const applets = ['sh', 'ls', 'cat', 'id', 'echo', 'touch', 'stat', 'env', 'pwd', 'true', 'false', 'mkdir', 'rm', 'head', 'wc'];
  return [
    { type: 'dir', name: 'bin/' },
    { type: 'file', name: 'bin/busybox', content: readFileSync('/bin/busybox'), mode: 0o755 },
    ...applets.map((a): TarEntry => ({ type: 'hardlink', name: `bin/${a}`, target: 'bin/busybox' })),
    { type: 'dir', name: 'etc/' },
    { type: 'file', name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\napp:x:1001:1001:app:/home/app:/bin/sh\n' },
    { type: 'file', name: 'etc/group', content: 'root:x:0:\napp:x:1001:\n' },
    { type: 'dir', name: 'home/' },
    { type: 'dir', name: 'home/app/', uid: 1001, gid: 1001, mode: 0o700 },
    { type: 'file', name: 'home/app/secret.txt', content: 'app-only\n', uid: 1001, gid: 1001, mode: 0o600 },
    { type: 'file', name: 'etc/shadow', content: 'root:*:1::::::\n', mode: 0o600 },
  ];
}
