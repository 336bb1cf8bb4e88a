// The profile contract. A profile is data (profiles/*.json); this schema is the only
// definition of its shape, and the TypeScript types below come from it.
import { z } from 'zod';
import { DEFAULT_SOCKET_FAMILIES, SOCKET_FAMILY_NAMES } from './socket-families.js';

export const RUNTIMES = ['node', 'python', 'bash'] as const;
export const runtimeSchema = z.enum(RUNTIMES);
export type Runtime = z.infer<typeof runtimeSchema>;

/** Hard bounds no profile may exceed: they keep one invocation from owning the host. */
export const HARD_BOUNDS = {
  // Six hours: what a CI job (a profile with a `jobs` section) may be given; a profile's
  // own max keeps functions far below it.
  timeoutMs: 6 * 60 * 60 * 1000,
  memoryMb: 64 * 1024,
  pids: 4096,
  cpus: 64,
  outputBytes: 16 * 1024 * 1024,
} as const;

export const limitsSchema = z.strictObject({
  timeoutMs: z.number().int().min(1).max(HARD_BOUNDS.timeoutMs),
  memoryMb: z.number().int().min(16).max(HARD_BOUNDS.memoryMb),
  pids: z.number().int().min(1).max(HARD_BOUNDS.pids),
  cpus: z.number().min(0.01).max(HARD_BOUNDS.cpus),
  outputBytes: z.number().int().min(0).max(HARD_BOUNDS.outputBytes),
});
export type Limits = z.infer<typeof limitsSchema>;
export const LIMIT_NAMES = Object.keys(limitsSchema.shape) as (keyof Limits)[];

const absolutePath = z
  .string()
  .min(2)
  .max(4096)
  .regex(/^\/[^\0]*$/, 'must be an absolute path')
  .refine((p) => !p.split('/').includes('..'), 'must not contain ".."');

export const bindSchema = z.strictObject({
  /** Host path, bound read-only. */
  source: absolutePath,
  /** Path inside the sandbox. */
  target: absolutePath,
});

const port = z.number().int().min(1).max(65535);

/** Landlock rights the kernel added after ABI 1, and the ABI that added them. */
export const LANDLOCK_RIGHTS_BY_ABI = {
  'fs.refer': 2,
  'fs.truncate': 3,
  'net.bind_tcp': 4,
  'net.connect_tcp': 4,
  'fs.ioctl_dev': 5,
  'scope.abstract_unix_socket': 6,
  'scope.signal': 6,
} as const;
export const LANDLOCK_MAX_KNOWN_ABI = 7;

export const landlockSchema = z.strictObject({
  /** Lowest Landlock ABI this profile needs for full enforcement. */
  minAbi: z.number().int().min(1).max(LANDLOCK_MAX_KNOWN_ABI),
  /**
   * On a kernel below minAbi: false refuses to start; true starts, enforces what the
   * kernel can, and reports the rest (GET /host, start-up log, each result).
   */
  bestEffort: z.boolean(),
  /** Extra sandbox paths readable (files and directories beneath). */
  readOnly: z.array(absolutePath).max(32).default([]),
  /** Extra sandbox paths readable and writable (e.g. a workspace). */
  readWrite: z.array(absolutePath).max(32).default([]),
  /** TCP ports the function may bind (ABI 4+); none by default. */
  tcpBind: z.array(port).max(64).default([]),
  /** TCP ports the function may connect to (ABI 4+); none by default. */
  tcpConnect: z.array(port).max(64).default([]),
});

const syscallName = z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, 'must be a syscall name');
const syscallList = z.array(syscallName).max(512);

/** A syscall allowlist per runtime: `common` plus the runtime's own list. */
export const seccompPolicySchema = z.strictObject({
  description: z.string().max(1000).optional(),
  common: syscallList,
  runtimes: z.strictObject({ node: syscallList, python: syscallList, bash: syscallList }),
  /** The `image` class: what programs of an OCI image may call besides `common`. Absent: the profile runs no images. */
  image: syscallList.optional(),
});
export type SeccompPolicy = z.infer<typeof seccompPolicySchema>;

export const brokeredFileSchema = z.strictObject({
  /** Exactly the path the sandbox opens (it need not exist in the sandbox's view). */
  path: absolutePath,
  /** Host file the broker opens instead, read-only, without following symlinks. */
  source: absolutePath,
});

/**
 * Reads a policy file named by a profile. Set while a profile file is parsed, so that
 * `seccomp.policy` may be a file name relative to the profile's directory.
 */
let readPolicyFile: ((name: string) => unknown) | null = null;
export function withPolicyReader<T>(reader: (name: string) => unknown, fn: () => T): T {
  const prev = readPolicyFile;
  readPolicyFile = reader;
  try {
    return fn();
  } finally {
    readPolicyFile = prev;
  }
}

export const seccompSchema = z.strictObject({
  /** The allowlist, inline or as a file name (e.g. "seccomp/default.json") next to the profile. */
  policy: z.preprocess((v, ctx) => {
    if (typeof v !== 'string') return v;
    if (!/^[a-z0-9/-]+\.json$/.test(v) || v.includes('..')) {
      ctx.addIssue({ code: 'custom', message: 'must name a .json file beside the profile (letters, digits, - and /)' });
      return z.NEVER;
    }
    if (!readPolicyFile) {
      ctx.addIssue({ code: 'custom', message: 'names a policy file, but no profile directory is known' });
      return z.NEVER;
    }
    const read = readPolicyFile(v);
    if (read instanceof Error) {
      ctx.addIssue({ code: 'custom', message: `cannot read the policy file: ${read.message}` });
      return z.NEVER;
    }
    return read;
  }, seccompPolicySchema),
  brokeredFiles: z.array(brokeredFileSchema).max(16).default([]),
  /**
   * Address families socket() and socketpair() may use (AF_* names). Any other family is
   * refused with EAFNOSUPPORT and audited, whatever the allowlist says.
   */
  socketFamilies: z
    .array(z.enum(SOCKET_FAMILY_NAMES))
    .max(SOCKET_FAMILY_NAMES.length)
    .refine((l) => new Set(l).size === l.length, 'must not name a family twice')
    .default(DEFAULT_SOCKET_FAMILIES),
});

const ipv4 = z.string().regex(/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/, 'must be an IPv4 address');
const cidr4 = z
  .string()
  .regex(/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/([0-9]|[12]\d|3[0-2])$/, 'must be an IPv4 CIDR');

export const networkSchema = z.discriminatedUnion('mode', [
  /** Only `lo`, no routes, no resolver. */
  z.strictObject({ mode: z.literal('none') }),
  /** A veth to the router namespace; only the allowlist passes. */
  z.strictObject({
    mode: z.literal('egress'),
    allow: z
      .array(
        z.strictObject({
          cidr: cidr4,
          /** Destination ports; empty means every port of the protocol. */
          ports: z.array(port).max(64).default([]),
          protocol: z.enum(['tcp', 'udp']).default('tcp'),
        }),
      )
      .max(64),
    /** Resolver the sandbox may query on port 53 (written to its /etc/resolv.conf). */
    dns: ipv4.optional(),
    limits: z
      .strictObject({
        maxConnections: z.number().int().min(1).max(65535).optional(),
        newConnectionsPerSecond: z.number().int().min(1).max(100000).optional(),
      })
      .default({}),
  }),
  /**
   * Test-only: join an existing named network namespace (made and owned by someone
   * else), so a test can show what the other layers stop on their own.
   */
  z.strictObject({ mode: z.literal('join'), netns: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/) }),
]);

/** A job's disk (its workspace filesystem) may be at most this large. */
export const MAX_JOB_DISK_MB = 256 * 1024;
/**
 * A job's log (stdout and stderr together) may be at most this large. Unlike outputBytes
 * it is volume, not memory: the supervisor forwards a job's output and keeps none of it,
 * and the server keeps a bounded tail (ZVIZ_JOB_LOG_KB).
 */
export const MAX_JOB_LOG_MB = 64 * 1024;

/**
 * What a profile gives CI jobs (POST /jobs); a profile without this section runs none.
 */
export const jobsSchema = z.strictObject({
  /** The workspace filesystem's size (the job's disk limit), MiB. */
  diskMb: z
    .strictObject({ default: z.number().int().min(16).max(MAX_JOB_DISK_MB), max: z.number().int().min(16).max(MAX_JOB_DISK_MB) })
    .refine((d) => d.default <= d.max, 'default must be at most max'),
  /**
   * The most a job may print (stdout and stderr together), MiB: past it the job is killed
   * with 'output-limit'. Jobs' only output bound: outputBytes does not apply to them.
   */
  logMb: z
    .strictObject({ default: z.number().int().min(1).max(MAX_JOB_LOG_MB), max: z.number().int().min(1).max(MAX_JOB_LOG_MB) })
    .refine((d) => d.default <= d.max, 'default must be at most max')
    .default({ default: 1024, max: 1024 }),
  /** Where the workspace is mounted inside the sandbox (and the job's working directory). */
  workspace: absolutePath.default('/workspace'),
  /** The artifacts archive (tar.gz) may be at most this large, MiB. */
  maxArtifactsMb: z.number().int().min(1).max(64 * 1024).default(256),
  /** A saved cache (tar.gz) may be at most this large, MiB; a larger one is not saved. */
  maxCacheMb: z.number().int().min(1).max(64 * 1024).default(512),
  /**
   * true: the network is the operator's job egress allowlist (ZVIZ_JOB_EGRESS) when set,
   * instead of this profile's `network`.
   */
  egressFromConfig: z.boolean().default(false),
});
export type JobsSection = z.infer<typeof jobsSchema>;

export const profileSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, 'must be lower-case letters, digits and dashes'),
    description: z.string().max(500).optional(),
    /** Runtimes this profile may run. */
    runtimes: z.array(runtimeSchema).min(1),
    limits: z.strictObject({
      /** Used when the request does not set a limit. */
      defaults: limitsSchema,
      /** The most a request may ask for. */
      max: limitsSchema,
    }),
    filesystem: z.strictObject({
      tmpSizeMb: z.number().int().min(1).max(16 * 1024),
      shmSizeMb: z.number().int().min(1).max(16 * 1024),
      /** Whether /tmp allows execve of files written there. */
      tmpExec: z.boolean(),
      /**
       * Extra host paths bound read-only. Meant for test-only profiles (for example one that
       * binds the host's /etc to show another layer stops what the mount view no longer does).
       */
      readOnlyBinds: z.array(bindSchema).max(32).default([]),
    }),
    landlock: landlockSchema,
    seccomp: seccompSchema,
    network: networkSchema.default({ mode: 'none' }),
    /**
     * AppArmor profile the function is confined by (applied at its execve, as
     * aa_change_onexec does). Only on hosts where AppArmor is enabled; start-up refuses
     * a profile naming one on a host without it.
     */
    apparmorProfile: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$/, 'must be an AppArmor profile name')
      .optional(),
    rlimits: z.strictObject({
      nofile: z.number().int().min(16).max(1 << 20),
      fsizeMb: z.number().int().min(1).max(64 * 1024),
    }),
    /** CI jobs (POST /jobs): absent, the profile runs none. */
    jobs: jobsSchema.optional(),
  })
  .superRefine((p, ctx) => {
    for (const k of LIMIT_NAMES) {
      if (p.limits.defaults[k] > p.limits.max[k]) {
        ctx.addIssue({
          code: 'custom',
          path: ['limits', 'defaults', k],
          message: `must be at most limits.max.${k} (${p.limits.max[k]})`,
        });
      }
    }
  });

export type Profile = z.infer<typeof profileSchema>;
