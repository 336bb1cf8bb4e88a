// A CI job's workspace: a filesystem of its own, so the job's disk limit is the size of
// that filesystem and nothing the job writes reaches the host's disk beyond it. Each is
// an ext4 image file (sparse, `diskMb` large) in `$ZVIZ_STATE_DIR/jobs/`, loop-mounted
// nosuid,nodev on `/run/zviz/jobs/<server pid>-<job id>`, its root owned by 1000:1000,
// the id the sandbox's idmapped mount shows as the function's (native/src/mnt.c). Why a
// loop-mounted image rather than project quotas: it needs nothing of the state
// directory's filesystem (no prjquota mount option, any filesystem), a full workspace
// is an ENOSPC inside the job and never on the host, and removal is one umount and one
// unlink. Names carry the server's pid, so a restarted server (or one that was killed)
// removes what a dead predecessor left (sweepWorkspaces).
import { execFile } from 'node:child_process';
import { lstat, mkdir, open, readdir, rm, rmdir, statfs } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { JOBS_DIR } from '../host/names.js';
import { processAlive } from '../host/pids.js';
import { errorMessage } from '../util/errors.js';

/** The id, inside the sandbox, that owns a workspace's files (ZV_SANDBOX_UID). */
export const WORKSPACE_OWNER = 1000;
/** Smallest workspace: ext4 needs room for its own metadata. */
export const MIN_DISK_MB = 16;

const NAME = /^(\d+)-[A-Za-z0-9-]{1,64}$/;

export interface Workspace {
  /** `<server pid>-<job id>`: the name of the image file and the mount point. */
  name: string;
  /** The image file in the state directory. */
  image: string;
  /** Where it is mounted on the host; the sandbox's workspace source. */
  mount: string;
  sizeBytes: number;
}

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } }, (err, _out, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolve();
    });
  });
}

/** The mount points currently on the host under JOBS_DIR, from /proc/self/mountinfo. */
function mountedUnder(dir: string): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const point = line.split(' ')[4];
    if (point !== undefined && point.startsWith(`${dir}/`)) out.add(point.replace(/\\040/g, ' '));
  }
  return out;
}

export class Workspaces {
  /** `stateDir`: the server's state directory; images go to `<stateDir>/jobs`. */
  constructor(
    private readonly stateDir: string,
    private readonly mountDir = JOBS_DIR,
  ) {}

  get imageDir(): string {
    return join(this.stateDir, 'jobs');
  }

  /**
   * Makes, formats and mounts a workspace of `diskMb` for job `id`. On any failure
   * nothing is left behind.
   */
  async create(id: string, diskMb: number, pid = process.pid): Promise<Workspace> {
    const name = `${pid}-${id}`;
    if (!NAME.test(name)) throw new Error(`Cannot make workspace: job id '${id}' is not a valid name`);
    const ws: Workspace = { name, image: join(this.imageDir, `${name}.ext4`), mount: join(this.mountDir, name), sizeBytes: Math.max(diskMb, MIN_DISK_MB) * 1024 * 1024 };
    await mkdir(this.imageDir, { recursive: true, mode: 0o700 });
    // The mount point's parents must be searchable for nobody in particular: only the
    // supervisor (host root) resolves it; 0755 keeps /run/zviz's convention.
    await mkdir(this.mountDir, { recursive: true, mode: 0o755 });
    try {
      const fh = await open(ws.image, 'wx', 0o600);
      try {
        await fh.truncate(ws.sizeBytes);
      } finally {
        await fh.close();
      }
      // -m 0: no blocks reserved for root (the job is never root on it); root_owner: the
      // function's id inside the sandbox; no discard: the file is sparse already.
      await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', `root_owner=${WORKSPACE_OWNER}:${WORKSPACE_OWNER},nodiscard`, '-L', 'zviz-job', ws.image]);
      await mkdir(ws.mount, { mode: 0o755 });
      await run('mount', ['-t', 'ext4', '-o', 'loop,nosuid,nodev,noatime', ws.image, ws.mount]);
      // lost+found is root's: the job has no use for it, and artifacts never see it.
      await rm(join(ws.mount, 'lost+found'), { recursive: true, force: true });
    } catch (e) {
      await this.remove(ws).catch(() => undefined); // the original error is the one to report
      throw new Error(`Cannot make workspace for job ${id}: ${errorMessage(e)}`);
    }
    return ws;
  }

  /** Free bytes left to the job on its workspace. */
  async freeBytes(ws: Workspace): Promise<number> {
    const s = await statfs(ws.mount);
    return s.bavail * s.bsize;
  }

  /**
   * Unmounts (lazily when something still holds it: the sandbox is gone, so only a
   * collector of ours could), detaches the loop device (mount's autoclear) and removes
   * the image and the mount point. Idempotent.
   */
  async remove(ws: Pick<Workspace, 'image' | 'mount'>): Promise<void> {
    if (mountedUnder(this.mountDir).has(ws.mount)) {
      await run('umount', [ws.mount]).catch(() => run('umount', ['-l', ws.mount]));
    }
    await rmdir(ws.mount).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    await rm(ws.image, { force: true });
  }

  /**
   * Removes the workspaces of servers that are no longer running (and, with `all`, this
   * process's too: at start-up none of ours can be in use). Returns the names removed.
   */
  async sweep(alive: (pid: number) => boolean = processAlive): Promise<string[]> {
    const names = new Set<string>();
    for (const n of await readdir(this.imageDir).catch(() => [] as string[])) if (n.endsWith('.ext4')) names.add(n.slice(0, -'.ext4'.length));
    for (const n of await readdir(this.mountDir).catch(() => [] as string[])) names.add(n);
    for (const p of mountedUnder(this.mountDir)) names.add(p.slice(this.mountDir.length + 1));
    const removed: string[] = [];
    for (const name of names) {
      const m = NAME.exec(name);
      if (m === null) continue;
      const pid = Number(m[1]);
      if (pid !== process.pid && alive(pid)) continue;
      const image = join(this.imageDir, `${name}.ext4`);
      const mount = join(this.mountDir, name);
      // Only ours: a mount point that is not a directory is not something we made.
      const st = await lstat(mount).catch(() => null);
      if (st !== null && !st.isDirectory()) continue;
      await this.remove({ image, mount });
      removed.push(name);
    }
    return removed;
  }
}
