// Deploying a function: the deploy contract (PUT /functions/:name), the caps on its code,
// and the checks a deploy passes against the host and the tenant. A deploy makes a new
// immutable version (store.ts).
import { z } from 'zod';
import { limitsSchema, runtimeSchema, type Profile, type Runtime } from '../../profiles/schema.js';
import { canReuse, runtimeDef } from '../../worker-pool/runtime/index.js';
import { ApiError } from '../http/errors.js';
import { checkRuntime, findProfile, resolveLimits, type TenantCap } from '../invocation/limits.js';
import { DEFAULT_PROFILE, envSchema, profileNameSchema } from '../invocation/schemas.js';
import type { FunctionSpec } from './store.js';
import { digestSchema } from '../uploads/store.js';

/** Sum of the UTF-8 sizes of a function's files. */
export const MAX_FUNCTION_CODE_BYTES = 1024 * 1024;
/** The native layer writes at most 64 files into a sandbox; the runtime bootstrap is one. */
export const MAX_FUNCTION_FILES = 63;
/** Sum of the UTF-8 sizes of the file paths. */
export const MAX_FILE_PATHS_BYTES = 64 * 1024;
/** Native limits on a path under /fn: 1024 bytes, 8 levels. */
export const MAX_FILE_PATH_BYTES = 1024;
export const MAX_FILE_PATH_DEPTH = 8;
export const MAX_SECRETS = 8;
/** The native layer serves at most 16 brokered files per sandbox (profile's and secrets together). */
export const MAX_BROKERED_FILES = 16;
export const MAX_FUNCTIONS_PER_TENANT = 100;
/** Older versions' code is deleted; invoking one is UNKNOWN_FUNCTION. */
export const FUNCTION_VERSIONS_KEPT = 5;

/** Each path component: no leading dot (so no `.`, `..` or `.zviz`, where the bootstrap lives) or dash. */
const PATH_COMPONENT = /^[A-Za-z0-9_][A-Za-z0-9._+@=,-]{0,254}$/;
export const SECRET_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The handler when none is named: the runtime's source file, as for inline code. */
const defaultHandler = (runtime: Runtime): string => runtimeDef(runtime).source;

const utf8 = (s: string) => Buffer.byteLength(s, 'utf8');

/** Why a relative path under /fn is not acceptable, or null. */
export function filePathProblem(path: string): string | null {
  if (path.length === 0) return 'must not be empty';
  if (utf8(path) > MAX_FILE_PATH_BYTES) return `must be at most ${MAX_FILE_PATH_BYTES} bytes`;
  const parts = path.split('/');
  if (parts.length > MAX_FILE_PATH_DEPTH) return `must be at most ${MAX_FILE_PATH_DEPTH} levels deep`;
  if (!parts.every((p) => PATH_COMPONENT.test(p))) {
    return 'must be a canonical relative path: components of letters, digits and ._+@=,- not starting with a dot or dash, no empty components';
  }
  return null;
}

const filePathSchema = z.string().superRefine((p, ctx) => {
  const problem = filePathProblem(p);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});

/** An absolute, canonical path inside the sandbox. */
export function sandboxPathProblem(path: string): string | null {
  if (!path.startsWith('/') || path.length < 2) return 'must be an absolute path';
  if (utf8(path) > 1024) return 'must be at most 1024 bytes';
  if (path.includes('\0')) return 'must not contain NUL characters';
  const parts = path.slice(1).split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return 'must be canonical: no empty, "." or ".." components';
  return null;
}

/** JSON.parse keeps "__proto__" as an own key, but zod's record skips it: refuse it instead of dropping it. */
function noProtoKey<T extends z.ZodType>(schema: T) {
  return z.preprocess((v, ctx) => {
    if (v !== null && typeof v === 'object' && Object.hasOwn(v, '__proto__')) {
      ctx.addIssue({ code: 'custom', path: ['__proto__'], message: 'key is reserved', input: v });
    }
    return v;
  }, schema);
}

const filesSchema = noProtoKey(
  z.record(filePathSchema, z.string()).superRefine((files, ctx) => {
    const paths = Object.keys(files);
    if (paths.length === 0) ctx.addIssue({ code: 'custom', message: 'must have at least one file' });
    if (paths.length > MAX_FUNCTION_FILES) {
      ctx.addIssue({ code: 'custom', message: `must have at most ${MAX_FUNCTION_FILES} files: current count is ${paths.length}` });
    }
    const listBytes = paths.reduce((n, p) => n + utf8(p), 0);
    if (listBytes > MAX_FILE_PATHS_BYTES) {
      ctx.addIssue({ code: 'custom', message: `paths must total at most ${MAX_FILE_PATHS_BYTES} bytes: current total is ${listBytes} bytes` });
    }
    // `lib` and `lib/util.js` cannot both exist: one name cannot be a file and a directory.
    const all = new Set(paths);
    for (const p of paths) {
      const parts = p.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (all.has(dir)) ctx.addIssue({ code: 'custom', path: [p], message: `is inside '${dir}', which is a file` });
      }
    }
  }),
);

export const secretsSchema = noProtoKey(
  z
    .record(
      z.string().superRefine((p, ctx) => {
        const problem = sandboxPathProblem(p);
        if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
      }),
      z.string().regex(SECRET_NAME_PATTERN, { error: 'must be a secret name: letters, digits and ._- starting with a letter or digit' }),
    )
    .refine((s) => Object.keys(s).length <= MAX_SECRETS, { error: `must have at most ${MAX_SECRETS} entries` }),
);

/** The handler contract an image function follows: the shell's (event on stdin, output on stdout). */
export const IMAGE_FUNCTION_CONTRACT: Runtime = 'bash';

/** Bounds of a function's reuse policy (README, functions). */
export const REUSE_BOUNDS = { maxInvocations: 100_000, idleMsMin: 1_000, idleMsMax: 3_600_000 } as const;

/**
 * `reuse`: "never" (the default: every invocation gets a fresh sandbox), or reusable
 * environments with their policy. Left out of the stored spec when never, so the digest of
 * a function deployed before reuse existed is unchanged.
 */
export const reuseSchema = z.union([
  z.literal('never'),
  z.strictObject({
    maxInvocations: z.number().int().min(1).max(REUSE_BOUNDS.maxInvocations).default(1000),
    idleMs: z.number().int().min(REUSE_BOUNDS.idleMsMin).max(REUSE_BOUNDS.idleMsMax).default(60_000),
    reset: z.enum(['tmp', 'none']).default('tmp'),
  }),
]);

export const deployFunctionSchema = z
  .strictObject({
    /** Required unless `image` is given. */
    runtime: runtimeSchema.optional(),
    /** An image of this host's store (GET /images): pinned to its digest at deploy. Instead of runtime, code and files. */
    image: z.string().min(1).max(1024).regex(/^[^\s\0]+$/, { error: 'must be an image digest or reference without white space' }).optional(),
    /** With image: replaces the image's Cmd (its Entrypoint stays in front). */
    command: z.array(z.string().max(4096).refine((a) => !a.includes('\0'), { error: 'must not contain NUL characters' })).min(1).max(256).optional(),
    /** One file: main.js, main.py or main.sh. Exactly one of code and files. */
    code: z.string().min(1, { error: 'must not be empty' }).optional(),
    /** Relative path → content; nested paths (lib/util.js) are fine. */
    files: filesSchema.optional(),
    /** The digest of an archive uploaded with POST /uploads (.tar.gz or .zip), unpacked on /fn. */
    bundle: digestSchema.optional(),
    /** The handler module (node, python) or script (bash), among the files. Default main.js, main.py or main.sh. */
    handler: filePathSchema.optional(),
    profile: profileNameSchema.default(DEFAULT_PROFILE),
    /** Defaults of the function's invocations, within the profile's max. */
    limits: limitsSchema.partial().default({}),
    env: envSchema.default({}),
    /** Sandbox path → name of a secret the operator provisioned for the tenant; served read-only. */
    secrets: secretsSchema.default({}),
    /** Reusable execution environments (opt-in): "never", or { maxInvocations, idleMs, reset }. */
    reuse: reuseSchema.default('never'),
  })
  .superRefine((b, ctx) => {
    if (b.image !== undefined) {
      for (const k of ['runtime', 'code', 'files', 'bundle', 'handler'] as const) {
        if (b[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: 'must be left out with image' });
      }
      if (b.reuse !== 'never') ctx.addIssue({ code: 'custom', path: ['reuse'], message: 'must be "never" for an image function (it has no bootstrap to serve many invocations)' });
      return;
    }
    if (b.runtime !== undefined && b.reuse !== 'never' && !canReuse(runtimeDef(b.runtime))) {
      ctx.addIssue({ code: 'custom', path: ['reuse'], message: `must be "never" for runtime '${b.runtime}': its handler contract is one process per invocation` });
    }
    if (b.command !== undefined) ctx.addIssue({ code: 'custom', path: ['command'], message: 'is only for image functions' });
    if (b.runtime === undefined) {
      ctx.addIssue({ code: 'custom', path: ['runtime'], message: 'is required (or give image)' });
      return;
    }
    const given = (['code', 'files', 'bundle'] as const).filter((k) => b[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({ code: 'custom', path: [given[1] ?? 'code'], message: 'exactly one of code, files and bundle must be given' });
      return;
    }
    const runtime = b.runtime;
    const handler = b.handler ?? defaultHandler(runtime);
    if (b.files !== undefined && !Object.hasOwn(b.files, handler)) {
      const why = b.handler === undefined ? `is required: files has no '${handler}'` : `must name one of the files: current value is '${handler}'`;
      ctx.addIssue({ code: 'custom', path: ['handler'], message: why });
    }
    if (b.code !== undefined && b.handler !== undefined && b.handler !== handler) {
      ctx.addIssue({ code: 'custom', path: ['handler'], message: `must be '${handler}' (or left out) with code` });
    }
    const ext = runtimeDef(runtime).handler.extensions;
    if (ext !== null && !ext.some((e) => handler.endsWith(e))) {
      ctx.addIssue({ code: 'custom', path: ['handler'], message: `must end with ${ext.join(', ')} for runtime '${runtime}'` });
    }
  });
export type DeployFunctionRequest = z.input<typeof deployFunctionSchema>;
type DeployBody = z.output<typeof deployFunctionSchema>;

export interface DeployContext {
  profiles: ReadonlyMap<string, Profile>;
  cap: TenantCap;
  /** Resolves an image function's reference to the digest it is pinned to; absent: IMAGE_NOT_FOUND. */
  pinImage?: (reference: string) => string;
  /** The checked bundle, when the deploy names one (server/functions/bundles.ts: prepare). */
  bundle?: { digest: string; bytes: number };
}

/**
 * Checks a validated deploy against the host (profile, runtime, limits within the profile
 * and the tenant's caps, the code cap, brokered file slots) and returns the spec to store.
 */
export function toFunctionSpec(body: DeployBody, ctx: DeployContext): FunctionSpec {
  if (body.image !== undefined) return imageFunctionSpec(body, body.image, ctx);
  const runtime = body.runtime!; // the schema requires it without image
  const files = body.bundle !== undefined ? {} : (body.files ?? { [defaultHandler(runtime)]: body.code ?? '' });
  const bytes = Object.values(files).reduce((n, c) => n + utf8(c), 0);
  if (bytes > MAX_FUNCTION_CODE_BYTES) {
    throw new ApiError(
      'PAYLOAD_TOO_LARGE',
      `Cannot deploy function: its files must total at most ${MAX_FUNCTION_CODE_BYTES} bytes of UTF-8: current total is ${bytes} bytes`,
      { maxBytes: MAX_FUNCTION_CODE_BYTES, bytes },
    );
  }
  const profile = findProfile(ctx.profiles, body.profile);
  checkRuntime(profile, runtime, 'deploy function');
  // Throws LIMIT_EXCEEDS_PROFILE or QUOTA_LIMITS now rather than at every invocation.
  resolveLimits(profile, body.limits, ctx.cap);
  checkBrokeredSlots(profile, body.secrets);
  return {
    runtime: runtime,
    files,
    handler: body.handler ?? defaultHandler(runtime),
    profile: profile.name,
    limits: body.limits,
    env: body.env,
    secrets: body.secrets,
    ...(ctx.bundle === undefined ? {} : { bundle: ctx.bundle }),
    ...(body.reuse === 'never' ? {} : { reuse: body.reuse }),
  };
}

/** An image function: the profile must run images, the reference is pinned to its digest now. */
function imageFunctionSpec(body: DeployBody, reference: string, ctx: DeployContext): FunctionSpec {
  const profile = findProfile(ctx.profiles, body.profile);
  if (!profile.seccomp.policy.image) {
    throw new ApiError('RUNTIME_NOT_ALLOWED', `Cannot deploy function: profile '${profile.name}' runs no images (its seccomp policy has no 'image' list)`);
  }
  resolveLimits(profile, body.limits, ctx.cap);
  checkBrokeredSlots(profile, body.secrets);
  if (!ctx.pinImage) throw new ApiError('IMAGE_NOT_FOUND', `Cannot deploy function: image ${JSON.stringify(reference)} is not in this host's store`);
  const digest = ctx.pinImage(reference);
  return {
    runtime: IMAGE_FUNCTION_CONTRACT,
    files: {},
    handler: '',
    profile: profile.name,
    limits: body.limits,
    env: body.env,
    secrets: body.secrets,
    image: { digest, reference, ...(body.command ? { command: body.command } : {}) },
  };
}

/** Secrets share the profile's brokered-file slots and may not shadow its paths. */
export function checkBrokeredSlots(profile: Profile, secrets: Readonly<Record<string, string>>): void {
  const own = profile.seccomp.brokeredFiles;
  const paths = Object.keys(secrets);
  const clash = paths.find((p) => own.some((f) => f.path === p));
  if (clash !== undefined) {
    throw new ApiError('VALIDATION_FAILED', `Cannot use secrets: path '${clash}' is already a brokered file of profile '${profile.name}'`, [
      { path: `secrets[${JSON.stringify(clash)}]`, message: `is already a brokered file of profile '${profile.name}'` },
    ]);
  }
  if (own.length + paths.length > MAX_BROKERED_FILES) {
    throw new ApiError(
      'VALIDATION_FAILED',
      `Cannot use secrets: profile '${profile.name}' brokers ${own.length} files, so at most ${MAX_BROKERED_FILES - own.length} secrets fit: current count is ${paths.length}`,
      [{ path: 'secrets', message: `must have at most ${MAX_BROKERED_FILES - own.length} entries with profile '${profile.name}'` }],
    );
  }
}
