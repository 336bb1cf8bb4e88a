// The HTTP contract of CI jobs (POST /jobs and friends). Request and record types come
// from these schemas.
import { z } from '@hono/zod-openapi';
import { limitsSchema, MAX_JOB_DISK_MB, MAX_JOB_LOG_MB, runtimeSchema } from '../../profiles/schema.js';
import { digestSchema } from '../uploads/store.js';
import { secretsSchema } from '../functions/deploy.js';
import { auditEventSchema, callbackUrlSchema, envSchema, INVOKE_REASONS, INVOKE_STATUSES, MAX_ARG_CHARS, MAX_ARGS, MAX_CODE_BYTES, profileNameSchema } from '../invocation/schemas.js';

/** The profile a job runs under when it names none. */
export const DEFAULT_JOB_PROFILE = 'ci';
export const MAX_ARTIFACT_PATTERNS = 32;
export const MAX_CACHE_PATHS = 16;
const MAX_PATTERN_CHARS = 256;

/** Why a workspace-relative path or glob is not acceptable, or null: it can never name anything outside. */
export function relativePatternProblem(p: string): string | null {
  if (p.length === 0) return 'must not be empty';
  if (p.includes('\0')) return 'must not contain NUL characters';
  if (p.includes('\\')) return 'must not contain a backslash';
  if (p.startsWith('/')) return 'must be relative to the workspace';
  if (p.split('/').some((c) => c === '..')) return "must not have a '..' component";
  return null;
}

const relativePattern = z
  .string()
  .max(MAX_PATTERN_CHARS)
  .superRefine((p, ctx) => {
    const problem = relativePatternProblem(p);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  });

const argSchema = z.string().max(MAX_ARG_CHARS).refine((s) => !s.includes('\0'), { error: 'must not contain NUL characters' });

export const jobLimitsSchema = limitsSchema.partial().extend({
  /** The workspace filesystem's size, MiB: the most the job can write there. */
  diskMb: z.number().int().min(16).max(MAX_JOB_DISK_MB).optional(),
  /** The most the job may print, stdout and stderr together, MiB; past it: killed, 'output-limit'. */
  logMb: z.number().int().min(1).max(MAX_JOB_LOG_MB).optional(),
});

export const jobBodySchema = z
  .strictObject({
    /** An OCI image of this host's store (GET /images) as the job's root; else a runtime's (the host's /usr). */
    image: z.string().min(1).max(1024).refine((s) => !/[\s\0]/.test(s), { error: 'must be an image digest or reference without white space' }).optional(),
    /** With no image: which runtime the profile must allow (default bash); the job may run anything of /usr. */
    runtime: runtimeSchema.optional(),
    /** A shell script, run with `sh -e` (image) or `bash -e -o pipefail` (runtime) in the workspace. */
    script: z.string().min(1).max(MAX_CODE_BYTES).refine((s) => !s.includes('\0'), { error: 'must not contain NUL characters' }).optional(),
    /** argv instead of a script; argv[0] absolute, or a name under /usr/bin (runtime) or in the image's PATH. */
    command: z.array(argSchema).min(1).max(MAX_ARGS).optional(),
    /** An upload's digest (POST /uploads): the archive unpacked as the workspace. Absent: an empty workspace. */
    workspace: digestSchema.optional(),
    env: envSchema.optional(),
    /** Sandbox path → secret name, as for deployed functions. */
    secrets: secretsSchema.optional(),
    profile: profileNameSchema.default(DEFAULT_JOB_PROFILE),
    limits: jobLimitsSchema.optional(),
    /** Glob patterns relative to the workspace (`*`, `?`, `**`); matches are archived after the run. */
    artifacts: z.array(relativePattern).max(MAX_ARTIFACT_PATTERNS).optional(),
    /** Restored into the workspace before the run, saved from it after a successful one; per tenant. */
    cache: z
      .strictObject({
        key: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, { error: 'must be letters, digits and ._- starting with a letter or digit, at most 128 characters' }),
        paths: z.array(relativePattern).min(1).max(MAX_CACHE_PATHS),
        /** An upload's digest, laid out as the cache (workspace-relative paths): restored while the tenant has no saved cache for the key. */
        seed: digestSchema.optional(),
      })
      .optional(),
    /** The job's record is POSTed here when it ends (ZVIZ_CALLBACK_HOSTS, as for async invocations). */
    callbackUrl: callbackUrlSchema.optional(),
  })
  .superRefine((b, ctx) => {
    if ((b.script === undefined) === (b.command === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['script'], message: "exactly one of 'script' and 'command' is required" });
    }
    if (b.image !== undefined && b.runtime !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['runtime'], message: "must not be given with 'image'" });
    }
  });
export type JobBody = z.infer<typeof jobBodySchema>;

export const JOB_STATUSES = [...INVOKE_STATUSES.filter((s) => s !== 'compile_error'), 'failed'] as const;
/** The sandbox's reasons, plus a job's own: cancelled (DELETE /jobs/:id), disk-full (the workspace filled up), host-restart. */
export const JOB_REASONS = [...INVOKE_REASONS, 'cancelled', 'disk-full', 'host-restart'] as const;
export type JobReason = (typeof JOB_REASONS)[number];

export const artifactsSchema = z.strictObject({
  /** sha256 of the tar.gz: GET /jobs/:id/artifacts serves it. */
  digest: z.string(),
  bytes: z.number().int(),
  files: z.number().int(),
  /** The archive stopped at the profile's maxArtifactsMb. */
  truncated: z.boolean(),
  /** Matches that were not archived (symlinks, devices, sockets), at most 32. */
  skipped: z.array(z.strictObject({ path: z.string(), reason: z.string() })),
});
export type ArtifactsSummary = z.infer<typeof artifactsSchema>;

export const jobRecordSchema = z.strictObject({
  id: z.string(),
  kind: z.literal('job'),
  status: z.enum(JOB_STATUSES),
  reason: z.enum(JOB_REASONS).nullable(),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  durationMs: z.number(),
  setupMs: z.number(),
  cpuMs: z.number(),
  brokerCpuMs: z.number(),
  memoryPeakBytes: z.number(),
  profile: z.string(),
  limits: limitsSchema.extend({ diskMb: z.number().int(), logMb: z.number().int().optional() }),
  image: z.string().nullable(),
  runtime: z.string().nullable(),
  workspace: z.string().nullable(),
  /** Bytes the job wrote to stdout and stderr, and how many of the last ones are kept. */
  log: z.strictObject({ bytes: z.number().int(), keptBytes: z.number().int() }),
  artifacts: artifactsSchema.nullable(),
  /** `seeded`: what was restored is the seed upload (the tenant had no saved cache for the key). */
  cache: z.strictObject({ key: z.string(), restored: z.boolean(), seeded: z.boolean(), saved: z.boolean(), bytes: z.number().int().nullable() }).nullable(),
  audit: z.array(auditEventSchema),
  /** Set with status 'failed': why the job could not run. */
  error: z.strictObject({ code: z.string(), message: z.string() }).optional(),
  startedAt: z.string(),
  endedAt: z.string(),
});
export type JobRecord = z.infer<typeof jobRecordSchema>;

export const jobPendingSchema = z.strictObject({
  id: z.string(),
  status: z.enum(['queued', 'running']),
});

/** What GET /jobs/:id answers once the job ended: its record, or an async failure (host-restart…). */
export const jobDoneSchema = z.union([
  jobRecordSchema,
  z.strictObject({ id: z.string(), status: z.literal('failed'), reason: z.literal('host-restart').nullable(), error: z.strictObject({ code: z.string(), message: z.string(), details: z.unknown().optional() }) }),
]);
