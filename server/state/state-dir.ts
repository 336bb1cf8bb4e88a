// The state directory (audit file, private Redis, secrets) and how the server knows it is
// still usable: it must take a write, at start-up and at every readiness check.
import { closeSync, fsyncSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface Check {
  ok: boolean;
  detail: string;
}

/** A small write that must reach the disk: a full or read-only file system fails it. */
const PROBE_BYTES = Buffer.alloc(512, 0x7a);

function probePath(dir: string): string {
  return join(dir, `.zviz-probe-${process.pid}`);
}

function failed(dir: string, e: unknown): Check {
  const err = e as NodeJS.ErrnoException;
  const why = err.code === 'ENOTDIR' || err.code === 'EEXIST' ? 'it is not a directory' : err.message;
  const fix = err.code === 'ENOSPC' ? 'free space on it, or set ZVIZ_STATE_DIR to another directory' : 'set ZVIZ_STATE_DIR to a writable directory';
  return { ok: false, detail: `Cannot write to state directory ${dir}: ${why} (${fix})` };
}

/** Start-up: writes, fsyncs and removes a probe file in the state directory. */
export function probeStateDirSync(dir: string): Check {
  const path = probePath(dir);
  try {
    if (!statSync(dir).isDirectory()) return failed(dir, Object.assign(new Error('not a directory'), { code: 'ENOTDIR' }));
    const fd = openSync(path, 'w', 0o600);
    try {
      writeSync(fd, PROBE_BYTES);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
      rmSync(path, { force: true });
    }
    return { ok: true, detail: `writable (${dir})` };
  } catch (e) {
    return failed(dir, e);
  }
}

/** Readiness: the same probe without blocking the event loop. */
export async function probeStateDir(dir: string): Promise<Check> {
  const path = probePath(dir);
  try {
    const file = await open(path, 'w', 0o600);
    try {
      await file.write(PROBE_BYTES);
      await file.sync();
    } finally {
      await file.close();
      await unlink(path).catch(() => undefined); // the probe file was not made: the write above failed and says why
    }
    return { ok: true, detail: `writable (${dir})` };
  } catch (e) {
    return failed(dir, e);
  }
}

const HOST_ID_PATTERN = /^[A-Za-z0-9._-]{1,100}$/;

/**
 * This host's identity, stable across restarts: `<hostname>-<8 hex>` from `<dir>/host-id`,
 * made on first start. Leases and async invocations name it, so a host restarted after a
 * crash knows which of them were its predecessor's and frees them at once. One state
 * directory is one host (two servers never share one).
 */
export function hostIdOf(dir: string): string {
  const path = join(dir, 'host-id');
  try {
    const id = readFileSync(path, 'utf8').trim();
    if (HOST_ID_PATTERN.test(id)) return id;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const name = hostname().replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 80) || 'host';
  const id = `${name}-${randomBytes(4).toString('hex')}`;
  writeFileSync(path, id + '\n', { mode: 0o600 });
  return id;
}
