// The state directory (audit file, private Redis, secrets) and how the server knows it is
// still usable: it must take a write, at start-up and at every readiness check.
import { closeSync, fsyncSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
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
