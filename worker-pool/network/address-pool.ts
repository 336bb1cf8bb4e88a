// Layer E's address pool: an egress sandbox gets the /31 pair `index` of ZVIZ_NET_POOL
// (router side first). Pairs are claimed host-wide through lock files in NET_LOCK_DIR, each
// holding the claimant's pid, so every worker thread of every server on the host draws from
// one pool and a dead claimant's pair can be taken back.
import { linkSync, mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { threadId } from 'node:worker_threads';
import { processAlive } from '../host/pids.js';

export function parseCidr(cidr: string): { base: number; bits: number } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (!m) throw new Error(`Invalid IPv4 CIDR: ${cidr}`);
  const octets = m.slice(1, 5).map(Number);
  const bits = Number(m[5]);
  if (octets.some((o) => o > 255) || bits > 32) throw new Error(`Invalid IPv4 CIDR: ${cidr}`);
  const base = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { base: (base & mask) >>> 0, bits };
}

export function ipString(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** How many /31 pairs `pool` holds. */
function pairsIn(pool: string): number {
  return 2 ** (32 - parseCidr(pool).bits) / 2;
}

/** The /31 pair of pool index i: router side first. */
export function pairFor(pool: string, index: number): { outer: string; inner: string } {
  const { base } = parseCidr(pool);
  if (index < 0 || index >= pairsIn(pool)) throw new Error(`Pool ${pool} has no pair ${index}`);
  return { outer: ipString(base + 2 * index), inner: ipString(base + 2 * index + 1) };
}

let tmpSeq = 0;
/**
 * Unique per thread of this process: claims are made in the pool's worker threads, each with
 * its own copy of this module (and of tmpSeq), so the pid alone let two threads write,
 * link and unlink the same temporary file (`unlink …/.claim-<pid>-0`: ENOENT).
 */
const tmpTag = (): string => `${process.pid}-${threadId}-${tmpSeq++}`;

/** Links a file holding our pid at `path`: the claim and its owner appear at once. */
function tryClaim(lockDir: string, path: string): boolean {
  const tmp = `${lockDir}/.claim-${tmpTag()}`;
  writeFileSync(tmp, String(process.pid), { mode: 0o600 });
  try {
    linkSync(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return false;
  } finally {
    unlinkSync(tmp);
  }
}

/** The pid a lock file holds (0 when it holds none), or null when it is gone. */
function ownerOf(path: string): number | null {
  try {
    const owner = Number(readFileSync(path, 'utf8'));
    return Number.isInteger(owner) && owner > 0 ? owner : 0;
  } catch {
    return null; // released meanwhile
  }
}

/**
 * Frees a lock whose owner is dead. The file is first moved aside (only one of several
 * reclaimers can move it); if what was moved turns out to be a live claim made in the
 * meantime, it is put back.
 */
export function reclaimIfStale(path: string, isAlive: (pid: number) => boolean = processAlive): boolean {
  const owner = ownerOf(path);
  if (owner === null || (owner > 0 && isAlive(owner))) return false;
  const aside = `${path}.stale-${tmpTag()}`;
  try {
    renameSync(path, aside);
  } catch {
    return false; // another reclaimer moved it first
  }
  const moved = ownerOf(aside);
  if (moved !== null && moved > 0 && isAlive(moved)) {
    try {
      linkSync(aside, path);
    } catch { // the slot was claimed again meanwhile; the live claim we moved keeps its rules
    }
  }
  unlinkSync(aside);
  return true;
}

/**
 * Claims a free pool index with a lock file holding our pid, linked into place so that a
 * claim never exists without its owner; a lock of a dead process is reclaimed.
 */
export function claimIndex(host: { pool: string; lockDir: string }, hint: number): number {
  const pairs = pairsIn(host.pool);
  mkdirSync(host.lockDir, { recursive: true, mode: 0o700 });
  // Several passes, a millisecond apart: pairs are released and claimed all the time, so
  // one pass can find each pair taken at the moment it looked although some pair was free
  // at every moment.
  for (let n = 0; n < 10 * pairs; n++) {
    if (n > 0 && n % pairs === 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    const i = (hint + n) % pairs;
    const path = `${host.lockDir}/${i}`;
    if (tryClaim(host.lockDir, path)) return i;
    if (reclaimIfStale(path) && tryClaim(host.lockDir, path)) return i;
  }
  throw new Error(`Network pool ${host.pool} is exhausted`);
}

export function releaseIndex(lockDir: string, index: number): void {
  try {
    unlinkSync(`${lockDir}/${index}`);
  } catch { // already gone: a sweep reclaimed it after our owner looked dead
  }
}

/** Every claimed pair and the pid holding it (0: none written; null: released while read). */
export function claims(lockDir: string): Array<{ index: number; owner: number | null }> {
  let names: string[];
  try {
    names = readdirSync(lockDir);
  } catch {
    return []; // no pool used on this host yet
  }
  return names
    .filter((f) => /^\d+$/.test(f))
    .map((f) => ({ index: Number(f), owner: ownerOf(`${lockDir}/${f}`) }));
}
