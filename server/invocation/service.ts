// One invocation, whatever the route's mode (plain, streaming, async): from a validated
// body to a task (inline code, or a deployed function through its handler contract),
// quota admission, the pool, and the response — with its lease released exactly once and
// its audit records and metrics written, however it ends.
import { randomUUID } from 'node:crypto';
import { asError } from '../../worker-pool/util/errors.js';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Profile } from '../../profiles/schema.js';
import { LIMIT_NAMES, RUNTIMES, type Limits, type Runtime } from '../../profiles/schema.js';
import { MAX_BROKERED_FILE_BYTES } from '../../worker-pool/spec.js';
import { commandTask, handlerTask, imageTask, ImageNotAllowedError, inlineTask, type SandboxTask } from '../../worker-pool/task.js';
import { ARTIFACT_FILE, compileArgv, compiledRunArgv, imageRootState, interpretedRunArgv, type Language } from '../../worker-pool/runtime/catalog.js';
import type { SandboxFile } from '../../worker-pool/runtime/index.js';
import { parseReference, pinnedReference, type ImageStore } from '../../worker-pool/images/index.js';
import { imageApiError } from '../images/routes.js';
import type { Bundles } from '../functions/bundles.js';
import type { HostFacts, OutputChunk, SandboxOutcome } from '../../worker-pool/types.js';
import { recordFailed, recordFinished, recordRefused, type AccountingDeps } from '../tenancy/accounting.js';
import type { AuditLog } from '../tenancy/audit.js';
import { ApiError } from '../http/errors.js';
import { checkBrokeredSlots, FUNCTION_VERSIONS_KEPT, IMAGE_FUNCTION_CONTRACT } from '../functions/deploy.js';
import { VersionCache, type FunctionStore, type FunctionVersion } from '../functions/store.js';
import { checkRuntime, findProfile, resolveLimits, type TenantCap } from './limits.js';
import { classify, tenth, toResponse, withAnswer } from './response.js';
import type { Logger } from '../ops/log.js';
import { StaleVersionError, type ExpectedVersion, type QuotaGate, type QuotaName, type Lease } from '../tenancy/quotas.js';
import type { AnyInvokeResponse, FunctionInvokeRequest, ImageInvokeRequest, InvokeBody, InvokeRequest, InvokeResponse } from './schemas.js';
import type { WithState } from '../state/guard.js';
import type { Tenant } from '../tenancy/tenants.js';

/** Runs one task. May reject with `ApiError('OVERLOADED', ...)` when its queue is full. */
export interface Invoker {
  invoke(task: SandboxTask, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome>;
  /**
   * Discards the reusable environments of a tenant's function (all its versions), or of
   * the whole tenant when `fn` is null: redeployed, deleted, tenant disabled.
   */
  retire?(tenant: string, fn: string | null, reason: 'redeployed' | 'deleted' | 'tenant-disabled'): void;
}

export interface InvocationDeps {
  profiles: ReadonlyMap<string, Profile>;
  invoker: Invoker;
  functions: FunctionStore;
  gate: QuotaGate;
  accounting: AccountingDeps & { audit: AuditLog };
  log: Logger;
  hostFacts: () => HostFacts;
  withState: WithState;
  /** Secrets are files `<secretsDir>/<tenant>/<name>` the operator provisioned; null: none exist. */
  secretsDir: string | null;
  /** This host's image store; null: no image can be named (IMAGE_NOT_FOUND). */
  images: ImageStore | null;
  /** Where a bundle function's tree comes from; null: none can run here. */
  bundles?: Bundles | null;
  /** The catalog's languages this host can run (GET /runtimes); the built-in runtimes need none. */
  languages?: ReadonlyMap<string, Language>;
}

/** An invocation ready to be admitted: its task and what the response needs to name. */
export interface Prepared {
  id: string;
  tenant: Tenant;
  task: SandboxTask;
  profile: Profile;
  fn: { name: string; version: number } | null;
  /** A compiled language: the compile step, run first in its own sandbox, and the run step made from its artifact. */
  compile?: CompileStep;
  /** A deployed function's latest version when it was prepared (remembered or read): admission checks it still is. */
  expect?: ExpectedVersion;
}

export interface CompileStep {
  task: SandboxTask;
  /** The run step's task, given the compile step's stdout (the artifact, base64). */
  runTask(artifact: string): SandboxTask;
}

export interface Admitted {
  prep: Prepared;
  lease: Lease;
}

const QUOTA_OF_CODE: Partial<Record<string, QuotaName>> = {
  QUOTA_CONCURRENCY: 'concurrency',
  QUOTA_RATE: 'rate',
  QUOTA_CPU: 'cpu',
  QUOTA_LIMITS: 'limits',
};

function unknownFunction(name: string, message = `no function is named '${name}'`): ApiError {
  return new ApiError('UNKNOWN_FUNCTION', `Cannot find function: ${message}`, { function: name });
}

/** An inline invocation's task: the runtime checked against the profile, limits resolved. */
function buildTask(id: string, body: InvokeRequest & { runtime: Runtime }, profile: Profile, cap?: TenantCap): SandboxTask {
  checkRuntime(profile, body.runtime, 'run function');
  return inlineTask({
    id,
    runtime: body.runtime,
    code: body.code,
    ...(body.args ? { args: body.args } : {}),
    ...(body.env ? { env: body.env } : {}),
    ...(body.stdin !== undefined ? { stdin: body.stdin } : {}),
    limits: resolveLimits(profile, body.limits, cap),
    profile,
  });
}

/**
 * The CPU an invocation is charged, whatever its outcome: the sandbox's own (from its
 * cgroup, also when the native layer failed after the function ran) plus what the trusted
 * side spent on its behalf. A failure is not a way to burn CPU for free.
 */
export function chargedCpuMs(outcome: SandboxOutcome | undefined): number {
  if (outcome === undefined) return 0;
  if (!outcome.ok) return outcome.cpuMs ?? 0;
  return outcome.result.cpuMs + outcome.result.brokerCpuMs;
}

/** Whether a sandbox ran (or may have run) something of the invocation: it answered, or failed after GO. */
function ranSomething(o: SandboxOutcome | undefined): boolean {
  return o !== undefined && (o.ok || o.started === true);
}

/**
 * A run step's refusal with a 503 (no sandbox could be made, the queue was full) after its
 * compile step ran: the compiler ran on the tenant's code and is charged, so the answer is
 * not the 503 that promises a retry costs nothing twice.
 */
function afterWork(err: Error, compiled: SandboxOutcome | undefined): Error {
  if (!(err instanceof ApiError) || err.status !== 503 || !ranSomething(compiled)) return err;
  return new ApiError('SANDBOX_FAILED', `Cannot finish invocation: its compile step ran (and is charged), then: ${err.message}`, { after: 'compile', code: err.code, details: err.details });
}

/** How many times a function may turn out redeployed during one admission before it is refused. */
const STALE_ATTEMPTS = 3;

/** How many functions' latest versions are remembered (the memory starts over when full). */
const LATEST_ENTRIES = 10_000;

/** A function's entry among the remembered latest versions. */
const latestKey = (tenant: string, name: string): string => `${tenant}:${name}`;

export class InvocationService {
  readonly #cache = new VersionCache();
  /**
   * The latest version of each function last read, by `tenant:name`. An invocation is
   * prepared from it without a round trip of its own: the admission script checks that it is
   * still the latest (server/state/scripts.ts ADMIT), and when it is not, the invocation is
   * prepared again from what the store says (the memory only ever saves a round trip).
   */
  readonly #latest = new Map<string, number>();

  constructor(private readonly deps: InvocationDeps) {}

  /**
   * Builds the task and takes a lease. Refusals (a tenant's limit cap, a quota) are
   * audited and counted before they are thrown.
   */
  async start(tenant: Tenant, body: InvokeBody, id: string = randomUUID()): Promise<Admitted> {
    if ('function' in body) return this.#startFunction(tenant, body, id);
    return this.admit(tenant, id, () => ('image' in body ? this.#prepareImage(tenant, body, id) : this.#prepareInline(tenant, body, id)));
  }

  /**
   * From the remembered latest version when there is one; from the store's when it is not
   * (or no longer) right. Admission checks, in the step that takes the lease, that the
   * version prepared from is still the latest, whichever way it was learnt: a redeploy or
   * a delete that has returned is never raced by the version before it.
   */
  async #startFunction(tenant: Tenant, body: FunctionInvokeRequest, id: string): Promise<Admitted> {
    const key = latestKey(tenant.name, body.function);
    let latest = this.#latest.get(key) ?? null;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.admit(tenant, id, () => this.#prepareFunction(tenant, body, id, latest));
      } catch (e) {
        // Redeployed or deleted since (admission said so, or a version asked for is out of the
        // remembered range): nothing was taken, so go on from what admission saw, or the store.
        const stale = e instanceof StaleVersionError;
        if (!stale && !(latest !== null && e instanceof ApiError && e.code === 'UNKNOWN_FUNCTION')) throw e;
        this.#latest.delete(key);
        if (stale && e.latest === null) throw unknownFunction(body.function);
        if (attempt === STALE_ATTEMPTS) {
          throw new ApiError('OVERLOADED', `Cannot invoke function '${body.function}': it was redeployed ${attempt} times while being admitted; try again`);
        }
        latest = stale ? e.latest : null;
        if (latest !== null) this.#remember(key, latest);
      }
    }
  }

  /**
   * Prepares with `prepare` (any sandbox task: an invocation's, a CI job's) and takes its
   * lease. Refusals (a tenant's limit cap, a quota) are audited and counted before they
   * are thrown.
   */
  async admit(tenant: Tenant, id: string, prepare: () => Prepared | Promise<Prepared>): Promise<Admitted> {
    let prep: Prepared;
    let lease: Lease;
    let hold = (): void => undefined;
    try {
      prep = await prepare();
      // What the task names is held from here, not from the run: a collection between
      // admission and the run (a job's workspace being made, a queued async invocation)
      // must not remove it. The lease's release, which ends every path, lets go.
      hold = this.#hold(prep.task);
      // One lease for both steps of a compiled language.
      const timeoutMs = prep.task.limits.timeoutMs + (prep.compile?.task.limits.timeoutMs ?? 0);
      // A stale version is not a store failure: it passes the guard as it is. An admission
      // Redis failed is a retryable 503 like a read (server/state/guard.ts): no sandbox was
      // asked for, and a lease the script may have taken expires with its TTL.
      const admitted = await this.deps.withState('quota.acquire', 'check quotas', () =>
        this.deps.gate.admit(tenant, id, timeoutMs, prep.expect).catch((e: unknown) => (e instanceof StaleVersionError ? e : Promise.reject(e))),
      );
      if (admitted instanceof StaleVersionError) throw admitted;
      lease = admitted;
    } catch (e) {
      hold();
      const quota = e instanceof ApiError ? QUOTA_OF_CODE[e.code] : undefined;
      if (quota !== undefined) await recordRefused(this.deps.accounting, tenant.name, quota, e as ApiError, id);
      throw e;
    }
    const held = lease;
    return {
      prep,
      lease: {
        id: held.id,
        release: (cpuMs, auditRecords) => {
          hold();
          return held.release(cpuMs, auditRecords);
        },
      },
    };
  }

  /** Marks the image and the bundle tree `task` runs from in use (neither collected nor removed); returns the release, idempotent. */
  #hold(task: SandboxTask): () => void {
    const image = task.image && this.deps.images ? this.deps.images.acquire(task.image.digest) : null;
    const tree = task.fnDir !== undefined && this.deps.bundles ? this.deps.bundles.acquire(task.fnDir) : null;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      image?.();
      tree?.();
    };
  }

  /**
   * Runs an admitted invocation and answers its response, or throws the ApiError the
   * route answers (after logging and auditing it). `onOutput` receives stdout and stderr
   * chunks as the function writes them.
   */
  async run({ prep, lease }: Admitted, onOutput?: (chunk: OutputChunk) => void): Promise<AnyInvokeResponse> {
    const { log, accounting } = this.deps;
    const { metrics } = accounting;
    const { id, profile, tenant } = prep;
    let task = prep.task;
    const fields = { id, tenant: tenant.name, runtime: task.language ?? task.runtime, profile: profile.name, ...(prep.fn ? { function: prep.fn.name, version: prep.fn.version } : {}) };
    const started = performance.now();
    let compiled: SandboxOutcome | undefined;
    let outcome: SandboxOutcome | undefined;
    let failure: unknown;
    metrics.inFlight.inc();
    // The image and the bundle tree stay held (since admission) until the lease's release below.
    try {
      if (prep.compile !== undefined) {
        compiled = await this.deps.invoker.invoke(prep.compile.task);
        if (compiled.ok && classify(compiled.result).status === 'ok') task = prep.compile.runTask(compiled.result.stdout);
      }
      if (compiled === undefined || task !== prep.task) outcome = await this.deps.invoker.invoke(task, onOutput);
    } catch (e) {
      failure = e;
    } finally {
      metrics.inFlight.dec();
    }
    const wallMs = performance.now() - started;
    // The audit records go to Redis with the lease's release: one round trip for both.
    const audit = accounting.audit.deferred();
    const recording: AccountingDeps = { ...accounting, audit };
    const inv = { tenant: tenant.name, task };

    let response: AnyInvokeResponse;
    try {
      const unenforced = this.deps.hostFacts().landlock.unenforced;
      if (failure !== undefined) throw failure;
      if (compiled !== undefined && outcome === undefined) {
        response = compileFailed(toResponse(id, profile.name, task.limits, compiled, unenforced), prep.compile!.task.limits);
      } else {
        if (outcome === undefined) throw failure;
        const base = toResponse(id, profile.name, task.limits, outcome, unenforced);
        response = prep.fn && outcome.ok ? withAnswer(base, task, outcome.result, prep.fn) : base;
        if (compiled !== undefined && compiled.ok) {
          const compile = compileSummary(toResponse(id, profile.name, task.limits, compiled), prep.compile!.task.limits);
          response = { ...response, chargedCpuMs: tenth(response.chargedCpuMs + compile.cpuMs + compile.brokerCpuMs), compile };
        }
      }
    } catch (e) {
      const err = afterWork(asError(e), compiled);
      const code = err instanceof ApiError ? err.code : 'INTERNAL';
      log.info('invoke', { ...fields, status: 'failed', code, durationMs: null });
      try {
        await recordFailed(recording, inv, code, outcome && !outcome.ok ? (outcome.cpuMs ?? null) : null);
      } finally {
        // A failure after the sandbox ran is still charged what it used (chargedCpuMs), and
        // so is a compile step that ran before it.
        await lease.release(chargedCpuMs(outcome) + chargedCpuMs(compiled), audit.stored);
      }
      throw err;
    }
    try {
      log.info('invoke', { ...fields, status: response.status, durationMs: response.durationMs, warm: response.warm });
      await recordFinished(recording, inv, response, wallMs);
    } finally {
      // Released before answering, so a client that calls again right away finds its slot free.
      // The CPU charged is the CPU answered, `chargedCpuMs`: the sandbox's and the trusted
      // side's, plus the compile step's when the answer is the run's.
      await lease.release(response.chargedCpuMs, audit.stored);
    }
    return response;
  }

  #prepareImage(tenant: Tenant, body: ImageInvokeRequest, id: string): Prepared {
    const profile = findProfile(this.deps.profiles, body.profile);
    const limits = resolveLimits(profile, body.limits, { tenant: tenant.name, max: tenant.quotas.maxLimits });
    const task = this.imageTask(id, body.image, { command: body.command, env: body.env, stdin: body.stdin, limits, profile });
    return { id, tenant, task, profile, fn: null };
  }

  /** A command in an image of the store, as the API's errors. `entrypoint` replaces the image's. */
  imageTask(
    id: string,
    ref: string,
    c: { command: string[] | undefined; entrypoint?: string[]; env: Record<string, string> | undefined; stdin: string | undefined; limits: Limits; profile: Profile },
  ): SandboxTask {
    if (!this.deps.images) throw new ApiError('IMAGE_NOT_FOUND', `Cannot run image ${JSON.stringify(ref)}: this server has no image store`);
    try {
      const record = this.deps.images.resolve(ref);
      return imageTask({
        id,
        image: { ...record.config, digest: record.digest, rootfs: this.deps.images.rootfs(record.digest) },
        ...(c.command ? { command: c.command } : {}),
        ...(c.entrypoint ? { entrypoint: c.entrypoint } : {}),
        ...(c.env ? { env: c.env } : {}),
        ...(c.stdin !== undefined ? { stdin: c.stdin } : {}),
        limits: c.limits,
        profile: c.profile,
      });
    } catch (e) {
      if (e instanceof ImageNotAllowedError) throw new ApiError('RUNTIME_NOT_ALLOWED', `Cannot run image ${JSON.stringify(ref)}: ${e.message}`);
      throw imageApiError(e);
    }
  }

  async #prepareInline(tenant: Tenant, body: InvokeRequest, id: string): Promise<Prepared> {
    const profile = findProfile(this.deps.profiles, body.profile);
    const cap = { tenant: tenant.name, max: tenant.quotas.maxLimits };
    if (isBuiltIn(body.runtime)) {
      if (body.compileLimits !== undefined) throw new ApiError('VALIDATION_FAILED', `Cannot use compileLimits: runtime '${body.runtime}' has no compile step`, [{ path: 'compileLimits', message: `is only for compiled languages` }]);
      return { id, tenant, task: buildTask(id, { ...body, runtime: body.runtime }, profile, cap), profile, fn: null };
    }
    const lang = this.deps.languages?.get(body.runtime);
    if (lang === undefined) {
      throw new ApiError('VALIDATION_FAILED', `Cannot run code: no runtime named '${body.runtime}' is available on this host (GET /runtimes lists them)`, [
        { path: 'runtime', message: 'must be a runtime GET /runtimes lists' },
      ]);
    }
    const step = await this.#languageStep(lang);
    if (lang.compile === undefined) {
      if (body.compileLimits !== undefined) throw new ApiError('VALIDATION_FAILED', `Cannot use compileLimits: runtime '${lang.name}' has no compile step`, [{ path: 'compileLimits', message: 'is only for compiled languages' }]);
      return { id, tenant, profile, fn: null, task: interpretedTask(id, lang, step, body, profile, cap) };
    }
    return { id, tenant, profile, fn: null, ...compiledTasks(id, lang, step, body, profile, cap) };
  }

  /**
   * How a catalog language's steps become sandboxes: on the host's /usr under the
   * definition's runtime allowlist, or rooted in its image (pulled first when the store
   * may fetch it) under the profile's `image` allowlist, with the image's Env.
   */
  async #languageStep(lang: Language): Promise<LanguageStep> {
    const root = lang.root;
    if (root === 'host') {
      const runtime = lang.syscalls as Runtime; // a host root names a runtime's allowlist (catalog.ts)
      return (c) => {
        checkRuntime(c.profile, runtime, `run ${lang.name} code`);
        return {
          ...commandTask({ id: c.id, argv: c.argv, ...(c.env ? { env: c.env } : {}), ...(c.stdin !== undefined ? { stdin: c.stdin } : {}), limits: c.limits, profile: c.profile, runtimes: [runtime] }),
          files: c.files,
          language: lang.name,
        };
      };
    }
    let state = imageRootState(lang, this.deps.images);
    if (state.status === 'pullable') {
      await this.#pullImage(root.image, null);
      state = imageRootState(lang, this.deps.images);
    }
    if (state.status !== 'ready') {
      const reason = state.status === 'unavailable' ? state.reason : `its image ${root.image} is not in this host's image store`;
      throw new ApiError(state.status === 'unavailable' ? state.code : 'IMAGE_NOT_FOUND', `Cannot run ${lang.name} code: ${reason}`);
    }
    const digest = state.digest;
    return (c) => ({
      ...this.imageTask(c.id, digest, { command: [], entrypoint: c.argv, env: c.env, stdin: c.stdin, limits: c.limits, profile: c.profile }),
      files: c.files,
      language: lang.name,
    });
  }

  /** `remembered`: the latest version to prepare from without asking the store (null: ask it). */
  async #prepareFunction(tenant: Tenant, body: FunctionInvokeRequest, id: string, remembered: number | null): Promise<Prepared> {
    const { fn, latest } = await this.#load(tenant.name, body.function, body.version, remembered);
    const expect = { name: fn.name, version: latest };
    const profile = findProfile(this.deps.profiles, body.profile ?? fn.profile);
    // An image function's runtime names its handler contract only; the profile must run images.
    if (!fn.image) checkRuntime(profile, fn.runtime, `run function '${fn.name}'`);
    const limits = resolveLimits(profile, { ...fn.limits, ...body.limits }, { tenant: tenant.name, max: tenant.quotas.maxLimits });
    checkBrokeredSlots(profile, fn.secrets);
    const secrets = await this.secretFiles(tenant.name, `function '${fn.name}'`, fn.secrets);
    const context = { invocationId: id, function: fn.name, version: fn.version, tenant: tenant.name, deadlineMs: Date.now() + limits.timeoutMs };
    if (fn.image) {
      await this.#fetchPinned(fn.image);
      // Exactly the digest the deploy pinned; the shell's handler contract (the event's JSON on stdin).
      const task = this.imageTask(id, fn.image.digest, { command: fn.image.command, env: fn.env, stdin: JSON.stringify(body.input ?? null), limits, profile });
      task.runtime = IMAGE_FUNCTION_CONTRACT;
      task.profile.brokeredFiles.push(...secrets);
      return { id, tenant, task, profile, fn: { name: fn.name, version: fn.version }, expect };
    }
    const fnDir = await this.#bundleTree(tenant.name, fn);
    const code = { ...fn, tenant: tenant.name, ...(fnDir === null ? {} : { fnDir }) };
    const task = handlerTask({ id, fn: code, event: body.input, context, limits, profile, secrets });
    return { id, tenant, task, profile, fn: { name: fn.name, version: fn.version }, expect };
  }

  /**
   * An image function on a host whose store lacks its digest (another host of the fleet
   * took the deploy, or the image was collected): a registry image is pulled again by its
   * pinned name, so the registry is the shared store of images. The pull checks the
   * allowlist, the caps and the digest; an import cannot be fetched again (404).
   */
  async #fetchPinned(image: { digest: string; reference: string }): Promise<void> {
    const images = this.deps.images;
    if (!images || images.get(image.digest) !== null) return;
    let pinned: string;
    try {
      const source = parseReference(image.reference);
      if (source.transport !== 'docker') return;
      pinned = pinnedReference(source, image.digest);
    } catch {
      return; // a reference this ZViz cannot parse: #imageTask answers IMAGE_NOT_FOUND
    }
    await this.#pullImage(pinned, image.digest);
  }

  /** Pulls an image an invocation needs (a pinned function's, a catalog language's), audited like an operator's pull. */
  async #pullImage(reference: string, digest: string | null): Promise<void> {
    const images = this.deps.images;
    if (!images) return;
    const audit = { type: 'image', tenant: null, action: 'image.pull', reference, remote: null } as const;
    let stored;
    try {
      stored = await images.pull(reference);
    } catch (e) {
      const err = imageApiError(e);
      await this.deps.accounting.audit.record({ ...audit, digest, outcome: 'failed', code: err instanceof ApiError ? err.code : 'INTERNAL' });
      throw err;
    }
    this.deps.log.info('image an invocation needs fetched', { digest: stored.digest, reference });
    await this.deps.accounting.audit.record({ ...audit, digest: stored.digest, outcome: 'stored', code: null });
  }

  /** A bundle function's unpacked tree on this host (made from the shared store when needed), or null. */
  async #bundleTree(tenant: string, fn: FunctionVersion): Promise<string | null> {
    if (fn.bundle === undefined) return null;
    const bundles = this.deps.bundles ?? null;
    if (bundles === null) {
      throw new ApiError('SANDBOX_UNAVAILABLE', `Cannot run function '${fn.name}': it is a bundle and this server does not take bundles`);
    }
    return bundles.tree(tenant, fn.bundle.digest);
  }

  /**
   * A version of a function: the latest unless asked; only the last FUNCTION_VERSIONS_KEPT
   * exist. `latest`: the latest version the function had when it was read (`remembered`,
   * or the store's).
   */
  async #load(tenant: string, name: string, version: number | undefined, remembered: number | null): Promise<{ fn: FunctionVersion; latest: number }> {
    const { functions, withState } = this.deps;
    const latest = remembered ?? (await withState('functions.latest', 'read function', () => functions.latest(tenant, name)));
    if (latest === null) throw unknownFunction(name);
    if (remembered === null) this.#remember(latestKey(tenant, name), latest);
    const v = version ?? latest;
    if (v > latest || v <= latest - FUNCTION_VERSIONS_KEPT) {
      const why = v > latest ? 'does not exist' : `is no longer kept (the last ${FUNCTION_VERSIONS_KEPT} are)`;
      throw unknownFunction(name, `version ${v} of function '${name}' ${why}: the latest is ${latest}`);
    }
    const key = VersionCache.key(tenant, name, v);
    const cached = this.#cache.get(key);
    if (cached !== undefined) return { fn: cached, latest };
    const fn = await withState('functions.version', 'read function', () => functions.version(tenant, name, v));
    // Deleted or replaced by enough newer versions since the first read.
    if (fn === null) throw unknownFunction(name, `version ${v} of function '${name}' is no longer stored`);
    this.#cache.set(key, fn);
    return { fn, latest };
  }

  #remember(key: string, latest: number): void {
    if (this.#latest.size >= LATEST_ENTRIES) this.#latest.clear();
    this.#latest.set(key, latest);
  }

  /**
   * The secrets' host files, as brokered files. The host path comes from the tenant and
   * the secret's name only (a name has no '/' and cannot be '.' or '..'), so a tenant can
   * only ever reach files the operator put in its own directory. The broker opens them
   * read-only without following symlinks and serves a sealed copy of at most
   * MAX_BROKERED_FILE_BYTES; this check only makes a missing or too large one a clear
   * error instead of an ENOENT or EFBIG inside the function.
   */
  async secretFiles(tenant: string, what: string, secrets: Readonly<Record<string, string>>): Promise<Array<{ path: string; source: string }>> {
    const out: Array<{ path: string; source: string }> = [];
    for (const [path, name] of Object.entries(secrets)) {
      const source = this.deps.secretsDir === null ? null : join(this.deps.secretsDir, tenant, name);
      const st = source === null ? null : await lstat(source).catch(() => null);
      if (!st?.isFile()) {
        this.deps.log.warn('secret not provisioned', { tenant, for: what, secret: name, expected: source });
        throw new ApiError(
          'SECRET_MISSING',
          `Cannot run ${what}: secret '${name}' (for ${path}) is not provisioned for tenant '${tenant}': ask the operator to provision it`,
          { for: what, secret: name, path },
        );
      }
      // The broker serves a copy of at most this size (and refuses a larger one): say so here.
      if (st.size > MAX_BROKERED_FILE_BYTES) {
        this.deps.log.warn('secret too large', { tenant, for: what, secret: name, path: source, bytes: st.size });
        throw new ApiError(
          'SECRET_TOO_LARGE',
          `Cannot run ${what}: secret '${name}' (for ${path}) must be at most ${MAX_BROKERED_FILE_BYTES} bytes: current size is ${st.size}: ask the operator to provision a smaller one`,
          { for: what, secret: name, path, bytes: st.size, maxBytes: MAX_BROKERED_FILE_BYTES },
        );
      }
      out.push({ path, source: source! });
    }
    return out;
  }
}

function isBuiltIn(name: string): name is Runtime {
  return (RUNTIMES as readonly string[]).includes(name);
}

/** A limit set lowered to the profile's max and the tenant's caps (the catalog's defaults must fit every profile). */
function clampLimits<L extends Partial<Limits>>(limits: L, profile: Profile, cap: TenantCap): L {
  const out = { ...limits };
  for (const k of LIMIT_NAMES) if (out[k] !== undefined) out[k] = Math.min(out[k], profile.limits.max[k], cap.max[k] ?? Infinity) as L[typeof k];
  return out;
}

/** The run step's limits: the request's over the definition's defaults (lowered to the caps), over the profile's. */
function runLimits(lang: Language, body: InvokeRequest, profile: Profile, cap: TenantCap): Limits {
  return resolveLimits(profile, { ...clampLimits(lang.run.limits ?? {}, profile, cap), ...body.limits }, cap);
}

/** One step of a catalog language as a sandbox task, rooted where the language's root is (InvocationService#languageStep). */
type LanguageStep = (c: { id: string; argv: string[]; files: SandboxFile[]; env?: Record<string, string> | undefined; stdin?: string | undefined; limits: Limits; profile: Profile }) => SandboxTask;

/** A catalog language without a compile step: its run argv over the source file, like inline code cold. */
function interpretedTask(id: string, lang: Language, step: LanguageStep, body: InvokeRequest, profile: Profile, cap: TenantCap): SandboxTask {
  return step({
    id,
    argv: interpretedRunArgv(lang, body.args ?? []),
    env: body.env,
    stdin: body.stdin,
    limits: runLimits(lang, body, profile, cap),
    profile,
    files: [{ name: lang.source, content: body.code }],
  });
}

/**
 * A compiled language's two steps, each its own sandbox with its own limits: the compile
 * step (the catalog's limits, lowered to the profile's and the tenant's caps, under the
 * request's compileLimits) and the run step (the request's limits, like any invocation),
 * whose /tmp allows exec because that is where the artifact runs.
 */
function compiledTasks(id: string, lang: Language, step: LanguageStep, body: InvokeRequest, profile: Profile, cap: TenantCap): { task: SandboxTask; compile: CompileStep } {
  const compileLimits = resolveLimits(profile, { ...clampLimits(lang.compile!.limits, profile, cap), ...body.compileLimits }, cap);
  const limits = runLimits(lang, body, profile, cap);
  const compileTask = step({ id: `${id}-compile`, argv: compileArgv(lang), limits: compileLimits, profile, files: [{ name: lang.source, content: body.code }] });
  const runProfile: Profile = { ...profile, filesystem: { ...profile.filesystem, tmpExec: true } };
  const runTask = (artifact: string): SandboxTask =>
    step({
      id,
      argv: compiledRunArgv(lang, body.args ?? []),
      env: body.env,
      stdin: body.stdin,
      limits,
      profile: runProfile,
      files: [{ name: ARTIFACT_FILE, content: artifact }],
    });
  return { task: runTask(''), compile: { task: compileTask, runTask } };
}

function compileSummary(r: InvokeResponse, limits: Limits): NonNullable<InvokeResponse['compile']> {
  return { status: r.status, reason: r.reason, exitCode: r.exitCode, durationMs: r.durationMs, cpuMs: r.cpuMs, brokerCpuMs: r.brokerCpuMs, memoryPeakBytes: r.memoryPeakBytes, limits };
}

/** The compile step did not produce an artifact: the code never ran; the compiler's output is the answer. */
function compileFailed(r: InvokeResponse, limits: Limits): InvokeResponse {
  return { ...r, status: 'compile_error', stdout: '', compile: compileSummary(r, limits) };
}
