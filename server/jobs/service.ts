// CI jobs: a script in a runtime's root or an image, in a workspace of its own on disk,
// for minutes or hours. A job is an async invocation with more around it — the same
// admission (quotas, a lease), the same sandbox and layers, the same record in Redis,
// polling, callback and host-restart recovery (invocation/async.ts) — plus, on this host:
//
//   workspace made (worker-pool/jobs/) → upload unpacked into it → cache restored (the
//   tenant's saved cache for the key, else the cache's seed upload) →
//   sandbox run, its output into the job's bounded log → artifacts and cache collected
//   (collect.ts) → log saved → workspace removed
//
// Cancellation kills the sandbox through its cgroup (as the drain deadline does) and
// keeps doing so until the run ends, so a cancel during setup is not lost.
import { randomUUID } from 'node:crypto';
import { chown, lchown, readdir, stat, utimes } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { allowlistFor, imageAllowlistFor } from '../../profiles/index.js';
import type { Limits, Profile } from '../../profiles/schema.js';
import { sandboxId } from '../../worker-pool/host/names.js';
import { WORKSPACE_OWNER, type Workspace, type Workspaces } from '../../worker-pool/jobs/workspace.js';
import { commandTask, type SandboxTask } from '../../worker-pool/task.js';
import type { OutputChunk } from '../../worker-pool/types.js';
import { errorMessage } from '../../worker-pool/util/errors.js';
import { checkBrokeredSlots } from '../functions/deploy.js';
import { ApiError, publicError } from '../http/errors.js';
import type { AsyncInvocations } from '../invocation/async.js';
import { findProfile, resolveLimits, checkRuntime } from '../invocation/limits.js';
import type { Admitted, InvocationService } from '../invocation/service.js';
import type { InvokeResponse } from '../invocation/schemas.js';
import type { Logger } from '../ops/log.js';
import type { JobEgressRule } from '../config.js';
import type { AuditLog } from '../tenancy/audit.js';
import type { Tenant } from '../tenancy/tenants.js';
import { checkArchive, DEFAULT_MAX_ENTRIES, unpackArchive } from '../uploads/unpack.js';
import type { UploadStore } from '../uploads/store.js';
import { archive, globMatcher, select } from './collect.js';
import { prune } from './retention.js';
import { JobLog } from './log.js';
import { relativePatternProblem, type ArtifactsSummary, type JobBody, type JobReason, type JobRecord } from './schemas.js';

const MiB = 1024 * 1024;
/** How often a cancelled job's cgroup is killed again until its run has ended. */
const CANCEL_RETRY_MS = 50;
/** How long a job's sandbox may take to lose its last process after the answer before nothing is collected. */
const SANDBOX_GONE_MS = 30_000;

export interface JobDeps {
  invocations: InvocationService;
  async: AsyncInvocations;
  profiles: ReadonlyMap<string, Profile>;
  workspaces: Workspaces;
  uploads: UploadStore | null;
  /** Kills every process of one sandbox (its cgroup); answers how many were signalled. */
  killSandbox: (sandboxId: string) => number;
  /** `<stateDir>/jobs`: logs, artifacts and caches live beneath it. */
  dir: string;
  /** ZVIZ_MAX_JOBS: jobs this server runs at once. */
  maxJobs: number;
  /** ZVIZ_JOB_LOG_KB in bytes: the tail of each job's log that is kept. */
  logBytes: number;
  /** How long logs and artifacts are kept after a job (as its record, ZVIZ_RESULT_TTL_S). */
  keepS: number;
  /** ZVIZ_JOB_CACHE_MB in bytes: each tenant's caches together; the least recently used go first. */
  cacheBytes: number;
  /** ZVIZ_JOB_CACHE_TTL_S: a cache not used for this long goes. */
  cacheTtlS: number;
  /** ZVIZ_JOB_ARTIFACTS_MAX: artifact archives each tenant keeps; the oldest go first. */
  maxArtifacts: number;
  log: Logger;
  audit: AuditLog;
}

interface Running {
  tenant: string;
  id: string;
  log: JobLog;
  cancelled: boolean;
  /** Resolves with the record once the job has ended (whatever happened). */
  done: Promise<JobRecord | null>;
  finish(record: JobRecord | null): void;
}

/** What a job was admitted with, beyond the sandbox task. */
interface JobPlan {
  body: JobBody;
  profile: Profile;
  diskMb: number;
  /** The most the job may print (task.logBytes), MiB. */
  logMb: number;
  workspaceTarget: string;
  workspaceFile: string | null;
  /** The cache's seed upload, restored when the tenant has no saved cache for the key. */
  cacheSeedFile: string | null;
  /** Lets go of the uploads above (kept from removal until they are unpacked); idempotent. */
  releaseUploads: () => void;
  startedAt: string;
}

/** Where a restored cache came from: the tenant's saved cache for the key, or the seed upload. */
type CacheSource = 'saved' | 'seed';

const key = (tenant: string, id: string) => `${tenant}/${id}`;

/**
 * Before any job can start: removes the workspaces that dead servers left — and this
 * process's own name too, as a restarted server in a container often has its
 * predecessor's pid.
 */
export async function sweepJobWorkspaces(workspaces: Workspaces, log: Logger): Promise<void> {
  const removed = await workspaces.sweep();
  if (removed.length > 0) log.warn('removed job workspaces a previous run left', { workspaces: removed });
}

export class JobService {
  readonly #running = new Map<string, Running>();
  /** Submits past the ZVIZ_MAX_JOBS check that are not running (or refused) yet: they hold a slot. */
  #reserved = 0;
  #sweeper: NodeJS.Timeout | null = null;

  constructor(private readonly deps: JobDeps) {}

  /** At start-up (after sweepJobWorkspaces): removes expired logs and artifacts, then every 10 minutes. */
  async open(): Promise<void> {
    await this.#expire();
    this.#sweeper = setInterval(() => void this.#expire(), 10 * 60 * 1000);
    this.#sweeper.unref();
  }

  close(): void {
    if (this.#sweeper) clearInterval(this.#sweeper);
  }

  get runningCount(): number {
    return this.#running.size;
  }

  /** Logs and artifacts older than the records that name them, caches unused for ZVIZ_JOB_CACHE_TTL_S. */
  async #expire(): Promise<void> {
    const ages: Array<[string, number]> = [
      ['logs', this.deps.keepS * 1000],
      ['artifacts', this.deps.keepS * 1000],
      ['cache', this.deps.cacheTtlS * 1000],
    ];
    for (const [sub, maxAgeMs] of ages) {
      const base = join(this.deps.dir, sub);
      for (const tenant of await readdir(base).catch(() => [] as string[])) await prune(join(base, tenant), { maxAgeMs });
    }
  }

  /**
   * Checks and admits a job, records it as running and starts it in the background.
   * Everything a caller can get wrong is refused here, before the 202.
   */
  async submit(tenant: Tenant, body: JobBody): Promise<string> {
    if (this.#running.size + this.#reserved >= this.deps.maxJobs) {
      throw new ApiError('OVERLOADED', `Cannot start job: ${this.#running.size + this.#reserved} jobs are running or starting on this host (ZVIZ_MAX_JOBS is ${this.deps.maxJobs}): retry later`);
    }
    // Taken before the first await, so concurrent submits cannot all pass the check.
    this.#reserved++;
    const slot = { held: true };
    try {
      return await this.#submit(tenant, body, slot);
    } finally {
      if (slot.held) this.#reserved--;
    }
  }

  /** `slot` is handed over to #running when the job is recorded there. */
  async #submit(tenant: Tenant, body: JobBody, slot: { held: boolean }): Promise<string> {
    const id = randomUUID();
    let plan: JobPlan | undefined;
    let admitted: Admitted;
    try {
      admitted = await this.deps.invocations.admit(tenant, id, async () => {
        const prepared = await this.#prepare(tenant, id, body);
        plan = prepared.plan;
        return { id, tenant, task: prepared.task, profile: prepared.plan.profile, fn: null };
      });
    } catch (e) {
      plan?.releaseUploads(); // prepared, then refused (a quota): nothing will unpack them
      throw e;
    }
    let finish!: (r: JobRecord | null) => void;
    const done = new Promise<JobRecord | null>((r) => (finish = r));
    const running: Running = { tenant: tenant.name, id, log: new JobLog(this.deps.logBytes), cancelled: false, done, finish };
    this.#running.set(key(tenant.name, id), running);
    slot.held = false;
    this.#reserved--;
    try {
      await this.deps.async.accept(admitted, body.callbackUrl, () => this.#run(admitted, plan!, running));
    } catch (e) {
      this.#running.delete(key(tenant.name, id));
      plan!.releaseUploads();
      throw e;
    }
    await this.deps.audit.record({ type: 'job', tenant: tenant.name, action: 'job.start', jobId: id, profile: plan!.profile.name, image: body.image ?? null, workspace: body.workspace ?? null });
    return id;
  }

  async #prepare(tenant: Tenant, id: string, body: JobBody): Promise<{ task: SandboxTask; plan: JobPlan }> {
    const profile = findProfile(this.deps.profiles, body.profile);
    const jobs = profile.jobs;
    if (jobs === undefined) {
      throw new ApiError('JOBS_NOT_ALLOWED', `Cannot start job: profile '${profile.name}' runs no jobs (it has no 'jobs' section): use profile 'ci'`, { profile: profile.name });
    }
    const { diskMb: requestedDisk, logMb: requestedLog, ...requested } = body.limits ?? {};
    const limits = resolveLimits(profile, requested, { tenant: tenant.name, max: tenant.quotas.maxLimits });
    const diskMb = jobLimit(profile, 'diskMb', requestedDisk);
    const logMb = jobLimit(profile, 'logMb', requestedLog);
    for (const p of [...(body.artifacts ?? []), ...(body.cache?.paths ?? [])]) {
      const problem = relativePatternProblem(p);
      if (problem !== null) throw new ApiError('VALIDATION_FAILED', `Cannot validate request body: path ${JSON.stringify(p)} ${problem}`, [{ path: 'artifacts', message: problem }]);
    }
    // Held from before their check until they are unpacked: a DELETE /uploads or the
    // collector in between would leave the job nothing to unpack.
    const holds: Array<() => void> = [];
    const releaseUploads = (): void => holds.forEach((release) => release());
    const checkHeld = async (digest: string, field: string, mb: number, room: string): Promise<string> => {
      if (this.deps.uploads !== null) holds.push(this.deps.uploads.hold(tenant.name, digest));
      return this.#checkUpload(tenant.name, digest, field, mb, room);
    };
    try {
      const workspaceFile = body.workspace === undefined ? null : await checkHeld(body.workspace, 'workspace', diskMb, `a disk of ${diskMb} MiB: raise limits.diskMb`);
      const seed = body.cache?.seed;
      const cacheSeedFile =
        seed === undefined
          ? null
          : await checkHeld(seed, 'cache.seed', Math.min(diskMb, jobs.maxCacheMb), `a disk of ${diskMb} MiB or a cache of ${jobs.maxCacheMb} MiB (profile '${profile.name}')`);
      const secrets = body.secrets ?? {};
      checkBrokeredSlots(profile, secrets);
      const brokered = await this.deps.invocations.secretFiles(tenant.name, `job ${id}`, secrets);
      const env = { CI: 'true', ZVIZ_JOB_ID: id, HOME: jobs.workspace, ...body.env };
      let task: SandboxTask;
      if (body.image !== undefined) {
        task = this.deps.invocations.imageTask(id, body.image, {
          command: body.script !== undefined ? ['-e', '-c', body.script] : body.command,
          // A script runs under the image's shell; a command replaces the Entrypoint too.
          entrypoint: body.script !== undefined ? ['/bin/sh'] : [],
          env,
          stdin: undefined,
          limits,
          profile,
        });
      } else {
        checkRuntime(profile, body.runtime ?? 'bash', 'run job');
        const argv = body.script !== undefined ? ['/usr/bin/bash', '-e', '-o', 'pipefail', '-c', body.script] : runtimeArgv(body.command!);
        task = commandTask({ id, argv, env, limits, profile, runtimes: profile.runtimes });
        // A build calls compilers, package managers and test runners: the image class too.
        task.profile.seccompAllow = [...new Set([...allowlistFor(profile, profile.runtimes), ...(imageAllowlistFor(profile) ?? [])])];
      }
      task.profile.brokeredFiles.push(...brokered);
      // The output is a log: streamed into job.log and not kept by the supervisor, bounded in volume.
      task.logBytes = logMb * MiB;
      return { task, plan: { body, profile, diskMb, logMb, workspaceTarget: jobs.workspace, workspaceFile, cacheSeedFile, releaseUploads, startedAt: new Date().toISOString() } };
    } catch (e) {
      releaseUploads();
      throw e;
    }
  }

  /**
   * The tenant's upload named by `field` (the workspace, a cache seed), checked entry by
   * entry (traversal, links out, size) before the 202: it must unpack to less than 90% of
   * `mb` MiB (`room` says what that is). Another tenant's digest is unknown here.
   */
  async #checkUpload(tenant: string, digest: string, field: string, mb: number, room: string): Promise<string> {
    const file = this.deps.uploads === null ? null : await this.deps.uploads.local(tenant, digest);
    if (file === null) {
      throw new ApiError('UNKNOWN_UPLOAD', `Cannot find upload ${digest} (${field}): tenant '${tenant}' has not uploaded it (POST /uploads first)`, { digest, field });
    }
    const checked = await checkArchive(file, { limits: { maxBytes: mb * MiB, maxEntries: DEFAULT_MAX_ENTRIES } }).catch((e: unknown) => {
      // Removed in the instant before this job's hold was taken (a DELETE, the collector).
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ApiError('UNKNOWN_UPLOAD', `Cannot find upload ${digest} (${field}): it was deleted as the job started`, { digest, field });
      }
      throw e;
    });
    if (checked.bytes > mb * MiB * 0.9) {
      throw new ApiError('LIMIT_EXCEEDS_PROFILE', `Cannot start job: the ${field} unpacks to ${checked.bytes} bytes, which does not fit ${room}`, {
        field: field === 'workspace' ? 'diskMb' : field,
        requested: mb,
        bytes: checked.bytes,
      });
    }
    return file;
  }

  /** The background part: never rejects for what happens to the job itself (its record says). */
  async #run(admitted: Admitted, plan: JobPlan, job: Running): Promise<JobRecord> {
    const { prep, lease } = admitted;
    const { tenant, id } = job;
    const started = performance.now();
    let ws: Workspace | null = null;
    let response: InvokeResponse | null = null;
    let failure: ApiError | null = null;
    let cacheRestored: CacheSource | null = null;
    let killer: NodeJS.Timeout | null = null;
    let leaseHeld = true;
    let artifacts: ArtifactsSummary | null = null;
    let cacheSaved: { saved: boolean; bytes: number | null } = { saved: false, bytes: null };
    let diskFull = false;
    try {
      ws = await this.deps.workspaces.create(id, plan.diskMb);
      if (plan.workspaceFile !== null) {
        await unpackArchive(plan.workspaceFile, ws.mount, { limits: { maxBytes: ws.sizeBytes, maxEntries: DEFAULT_MAX_ENTRIES } });
      }
      if (plan.body.cache !== undefined) cacheRestored = await this.#restoreCache(tenant, plan.body.cache.key, plan.cacheSeedFile, ws);
      plan.releaseUploads();
      await chownTree(ws.mount, WORKSPACE_OWNER);
      if (job.cancelled) throw new ApiError('SANDBOX_UNAVAILABLE', 'Cancelled before it ran');
      prep.task.workspace = { source: ws.mount, target: plan.workspaceTarget };
      // From here the invocation service owns the lease: it releases it however the run ends.
      leaseHeld = false;
      if (job.cancelled) this.#killLoop(job, (t) => (killer = t));
      const onOutput = (c: OutputChunk) => job.log.append(Buffer.from(c.data));
      const run = this.deps.invocations.run(admitted, onOutput);
      const r = (await run) as InvokeResponse;
      response = r;
      if (r.reason === 'output-limit') {
        job.log.append(Buffer.from(`\n[zviz] job killed: its output passed its log limit of ${plan.logMb} MiB (limits.logMb)\n`));
      }
      diskFull = r.status !== 'ok' && (await this.deps.workspaces.freeBytes(ws)) < Math.max(MiB, ws.sizeBytes / 100);
    } catch (e) {
      failure = e instanceof ApiError ? e : publicError(e, this.deps.log, { route: 'job', id });
      if (leaseHeld) await lease.release(0).catch(() => undefined); // the lease expires on its own
    } finally {
      plan.releaseUploads(); // a failure before the unpack ended
      if (killer !== null) clearInterval(killer);
      job.log.end();
    }
    // The answer comes before the sandbox's teardown (worker-pool/sandbox.ts settleRun, pool.ts): a
    // background process of the job may still be running and swapping files of the
    // workspace. Nothing is read from it until the sandbox has no process left.
    const settled = ws !== null && response !== null && (await this.#sandboxGone(id));
    if (ws !== null) {
      // Whatever the ending (cancelled, timed out, failed), what the job made is kept.
      try {
        if (response !== null && !settled) {
          this.deps.log.error('a job\'s sandbox kept processes after its run; nothing is collected', { tenant, id });
          if (plan.body.artifacts !== undefined) artifacts = { digest: '', bytes: 0, files: 0, truncated: false, skipped: [{ path: '', reason: 'sandbox still running: nothing collected' }] };
        } else if (response !== null && plan.body.artifacts !== undefined) artifacts = await this.#collectArtifacts(tenant, plan, ws);
        if (response?.status === 'ok' && plan.body.cache !== undefined) cacheSaved = await this.#saveCache(tenant, plan, ws);
      } catch (e) {
        this.deps.log.error('cannot collect a job\'s artifacts or cache', { tenant, id, error: errorMessage(e) });
      }
      await this.deps.workspaces.remove(ws).catch((e) => this.deps.log.error('cannot remove a job workspace', { tenant, id, workspace: ws!.mount, error: errorMessage(e) }));
    }
    await job.log.save(this.#logFile(tenant, id)).catch((e) => this.deps.log.error('cannot save a job log', { tenant, id, error: errorMessage(e) }));
    const record = this.#record(prep.id, plan, job, response, failure, { artifacts, cacheRestored, cacheSaved, diskFull, wallMs: performance.now() - started });
    this.#running.delete(key(tenant, id));
    job.finish(record);
    await this.deps.audit.record({ type: 'job', tenant, action: 'job.end', jobId: id, status: record.status, reason: record.reason }).catch(() => undefined); // audited best effort: the record is what counts
    return record;
  }

  #record(
    id: string,
    plan: JobPlan,
    job: Running,
    r: InvokeResponse | null,
    failure: ApiError | null,
    extra: { artifacts: ArtifactsSummary | null; cacheRestored: CacheSource | null; cacheSaved: { saved: boolean; bytes: number | null }; diskFull: boolean; wallMs: number },
  ): JobRecord {
    const limits = { ...(r?.limits ?? (plan.profile.limits.defaults as Limits)), diskMb: plan.diskMb, logMb: plan.logMb };
    let status: JobRecord['status'] = r?.status === 'compile_error' ? 'error' : (r?.status ?? 'failed');
    let reason: JobReason | null = r?.reason ?? null;
    if (job.cancelled) {
      status = 'killed';
      reason = 'cancelled';
    } else if (extra.diskFull && (status === 'error' || status === 'killed')) reason = 'disk-full';
    return {
      id,
      kind: 'job',
      status,
      reason,
      exitCode: r?.exitCode ?? null,
      signal: r?.signal ?? null,
      durationMs: r?.durationMs ?? Math.round(extra.wallMs),
      setupMs: r?.setupMs ?? 0,
      cpuMs: r?.cpuMs ?? 0,
      brokerCpuMs: r?.brokerCpuMs ?? 0,
      memoryPeakBytes: r?.memoryPeakBytes ?? 0,
      profile: plan.profile.name,
      limits,
      image: plan.body.image ?? null,
      runtime: plan.body.image === undefined ? (plan.body.runtime ?? 'bash') : null,
      workspace: plan.body.workspace ?? null,
      log: { bytes: job.log.totalBytes, keptBytes: job.log.keptBytes },
      artifacts: extra.artifacts,
      cache: plan.body.cache ? { key: plan.body.cache.key, restored: extra.cacheRestored !== null, seeded: extra.cacheRestored === 'seed', saved: extra.cacheSaved.saved, bytes: extra.cacheSaved.bytes } : null,
      audit: r?.audit ?? [],
      ...(failure !== null && !job.cancelled ? { error: { code: failure.code, message: failure.message } } : {}),
      startedAt: plan.startedAt,
      endedAt: new Date().toISOString(),
    };
  }

  async #collectArtifacts(tenant: string, plan: JobPlan, ws: Workspace): Promise<ArtifactsSummary> {
    const max = plan.profile.jobs!.maxArtifactsMb * MiB;
    const sel = await select(ws.mount, globMatcher(plan.body.artifacts!), max);
    if (sel.entries.length === 0) return { digest: '', bytes: 0, files: 0, truncated: sel.truncated, skipped: sel.skipped };
    const out = await archive(ws.mount, sel, join(this.deps.dir, 'artifacts', tenant));
    await prune(dirname(out.file), { maxFiles: this.deps.maxArtifacts, keep: basename(out.file) });
    return { digest: out.digest, bytes: out.bytes, files: sel.files, truncated: sel.truncated, skipped: sel.skipped };
  }

  #cacheFile(tenant: string, cacheKey: string): string {
    return join(this.deps.dir, 'cache', tenant, `${cacheKey}.tar.gz`);
  }

  /**
   * The tenant's cache under `key`, unpacked over the workspace with the checks any upload
   * gets; without one (or when it cannot be restored), the cache's seed upload the same way.
   */
  async #restoreCache(tenant: string, cacheKey: string, seedFile: string | null, ws: Workspace): Promise<CacheSource | null> {
    const file = this.#cacheFile(tenant, cacheKey);
    if ((await stat(file).catch(() => null)) !== null && (await this.#unpackCache(tenant, cacheKey, file, ws))) {
      const now = new Date();
      await utimes(file, now, now).catch(() => undefined); // recency for eviction only
      return 'saved';
    }
    if (seedFile !== null && (await this.#unpackCache(tenant, cacheKey, seedFile, ws))) return 'seed';
    return null;
  }

  async #unpackCache(tenant: string, cacheKey: string, file: string, ws: Workspace): Promise<boolean> {
    try {
      await unpackArchive(file, ws.mount, { limits: { maxBytes: await this.deps.workspaces.freeBytes(ws), maxEntries: DEFAULT_MAX_ENTRIES } });
      return true;
    } catch (e) {
      // A cache that no longer fits (or is damaged) is a miss, never a failed job.
      this.deps.log.warn('cannot restore a job cache', { tenant, key: cacheKey, file: basename(file), error: errorMessage(e) });
      return false;
    }
  }

  async #saveCache(tenant: string, plan: JobPlan, ws: Workspace): Promise<{ saved: boolean; bytes: number | null }> {
    const { key: cacheKey, paths } = plan.body.cache!;
    const max = plan.profile.jobs!.maxCacheMb * MiB;
    const sel = await select(ws.mount, globMatcher(paths), max);
    if (sel.entries.length === 0 || sel.truncated) return { saved: false, bytes: null };
    const out = await archive(ws.mount, sel, join(this.deps.dir, 'cache', tenant), this.#cacheFile(tenant, cacheKey));
    // Over the tenant's budget the least recently used (saved or restored) caches go; this one stays.
    await prune(dirname(out.file), { maxBytes: this.deps.cacheBytes, keep: basename(out.file) });
    return { saved: true, bytes: out.bytes };
  }

  #logFile(tenant: string, id: string): string {
    return join(this.deps.dir, 'logs', tenant, `${id}.log`);
  }

  /**
   * Kills what is left of a job's sandbox until its cgroup holds no process (the teardown
   * finishing does the same): true once empty, false if it is not within SANDBOX_GONE_MS.
   */
  async #sandboxGone(id: string): Promise<boolean> {
    for (let waited = 0; waited < SANDBOX_GONE_MS; waited += CANCEL_RETRY_MS) {
      if (this.deps.killSandbox(sandboxId(id)) === 0) return true;
      await new Promise((r) => setTimeout(r, CANCEL_RETRY_MS));
    }
    return false;
  }

  #killLoop(job: Running, keep: (t: NodeJS.Timeout) => void): void {
    const kill = () => this.deps.killSandbox(sandboxId(job.id));
    kill();
    keep(setInterval(kill, CANCEL_RETRY_MS));
  }

  /**
   * Cancels a job of this host: its sandbox is killed (and killed again until the run
   * ends). Resolves with the job's record once it has ended, or null when it takes longer
   * than `waitMs`. Null: not running here.
   */
  async cancel(tenant: string, id: string, waitMs: number): Promise<{ record: JobRecord | null } | null> {
    const job = this.#running.get(key(tenant, id));
    if (job === undefined) return null;
    if (!job.cancelled) {
      job.cancelled = true;
      let timer: NodeJS.Timeout | null = null;
      this.#killLoop(job, (t) => (timer = t));
      void job.done.finally(() => timer !== null && clearInterval(timer));
      await this.deps.audit.record({ type: 'job', tenant, action: 'job.cancel', jobId: id }).catch(() => undefined); // best effort, the cancel itself matters
    }
    const record = await Promise.race([job.done, new Promise<null>((r) => setTimeout(() => r(null), waitMs).unref())]);
    return { record };
  }

  /** A job running here: its live log, and its record once it has ended. */
  live(tenant: string, id: string): { log: JobLog; done: Promise<JobRecord | null> } | null {
    const job = this.#running.get(key(tenant, id));
    return job === undefined ? null : { log: job.log, done: job.done };
  }

  /** The saved log of an ended job of this host, or null. */
  logFile(tenant: string, id: string): string {
    return this.#logFile(tenant, id);
  }

  artifactFile(tenant: string, digest: string): string {
    return join(this.deps.dir, 'artifacts', tenant, `${digest.slice('sha256:'.length)}.tar.gz`);
  }
}

/**
 * The operator's job egress (ZVIZ_JOB_EGRESS, ZVIZ_JOB_DNS) as the network of every
 * profile that asks for it (jobs.egressFromConfig); other profiles, and all of them when
 * it is unset, keep their own. Applied before the host is opened, so layer E is set up
 * exactly when some profile gives egress.
 */
export function withJobEgress(profiles: Map<string, Profile>, egress: { allow: JobEgressRule[]; dns: string | null } | null): Map<string, Profile> {
  if (egress === null) return profiles;
  return new Map(
    [...profiles].map(([name, p]) => [
      name,
      p.jobs?.egressFromConfig ? { ...p, network: { mode: 'egress' as const, allow: egress.allow, ...(egress.dns ? { dns: egress.dns } : {}), limits: {} } } : p,
    ]),
  );
}

/** A job's own limit (jobs.diskMb, jobs.logMb): the request's within the profile's max, or its default. */
function jobLimit(profile: Profile, field: 'diskMb' | 'logMb', requested: number | undefined): number {
  const bounds = profile.jobs![field];
  const value = requested ?? bounds.default;
  if (value > bounds.max) {
    throw new ApiError('LIMIT_EXCEEDS_PROFILE', `Cannot apply limits: ${field} must be at most ${bounds.max} for profile '${profile.name}': current value is ${value}`, {
      field,
      max: bounds.max,
      requested: value,
    });
  }
  return value;
}

/** argv of a command in a runtime's root: a bare name is a program of /usr/bin. */
function runtimeArgv(command: readonly string[]): string[] {
  const [first, ...rest] = command;
  return [first!.startsWith('/') ? first! : `/usr/bin/${first}`, ...rest];
}

/** Gives the workspace tree to the id that is the function's inside the sandbox; links are not followed. */
async function chownTree(dir: string, id: number): Promise<void> {
  await chown(dir, id, id);
  for (const d of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, d.name);
    if (d.isDirectory()) await chownTree(full, id);
    else await lchown(full, id, id);
  }
}
