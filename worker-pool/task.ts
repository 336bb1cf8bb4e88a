// What one sandbox is made of (SandboxTask, plain data that crosses the piscina boundary)
// and the three ways ZViz makes one: code in a runtime (inlineTask), a deployed function
// through its handler contract (handlerTask), and a command (commandTask: `zviz run`, the
// start-up canary, the benchmarks). Each builds the profile's section with sandboxProfile,
// and asks the runtime's record (worker-pool/runtime) for argv, files and control.
import { allowlistFor, imageAllowlistFor, SOCKET_FAMILIES } from '../profiles/index.js';
import { existsInImage } from './images/tree.js';
import type { Limits, Profile, Runtime } from '../profiles/schema.js';
import { bootstrapFor, canReuse, envFor, FUNCTION_DIR, handlerInput, inlineRun, inlineWork, runtimeDef, BASE_ENV, type RuntimeDef, type SandboxFile } from './runtime/index.js';

/** Everything the native layer needs to build one sandbox and run one invocation in it. */
export interface SandboxTask {
  id: string;
  /** Whose syscall allowlist and (built-in) record the task uses. */
  runtime: Runtime;
  /** The catalog language the request named (cpp, c…), when it is not a built-in runtime: what audit and metrics call it. */
  language?: string;
  /** argv[0] is an absolute path inside the sandbox. */
  argv: string[];
  /** Exactly the environment the function sees. */
  env: Record<string, string>;
  /** Files written read-only under /fn; nested paths (lib/util.js) are fine. */
  files: SandboxFile[];
  /**
   * A host directory bound read-only on /fn instead (a deployed bundle's unpacked tree,
   * which carries the runtimes' bootstraps); `files` is then empty.
   */
  fnDir?: string;
  stdin: string;
  limits: Limits;
  /** Set when the task can run in a pre-warmed sandbox (always, for deployed functions). */
  warm?: WarmSpec;
  /** Set when a deployed function opted into reusable environments (worker-pool/reuse.ts). */
  reuse?: ReuseSpec;
  profile: SandboxProfile;
  /** An OCI image's tree is the root instead of the host's /usr (imageTask). */
  image?: SandboxImage;
  /**
   * A job's workspace: a host directory (its own filesystem, files owned by 1000:1000)
   * mounted read-write on `target`, idmapped to the function, and its working directory.
   */
  workspace?: { source: string; target: string };
  /**
   * A job's output is a log: streamed and not kept (the supervisor holds one 64 KiB read
   * per stream, the result carries no stdout or stderr), and ended with 'output-limit'
   * past this many bytes of stdout and stderr together. limits.outputBytes does not apply.
   */
  logBytes?: number;
}

/** What the native layer needs of an image root (worker-pool/images/). */
export interface SandboxImage {
  digest: string;
  /** Host directory of the unpacked, sanitized tree. */
  rootfs: string;
  /** The image's ids that are the function's own through the idmapped mount (never 0). */
  owner: { uid: number; gid: number };
  /** The function's working directory (the image's WorkingDir). */
  workdir: string;
}

/** The sections of a profile the native layer applies to one sandbox, resolved. */
export interface SandboxProfile {
  name: string;
  filesystem: Profile['filesystem'];
  landlock: Profile['landlock'];
  apparmorProfile?: string;
  /** The resolved allowlist (policy common + the runtimes' lists). */
  seccompAllow: string[];
  /** Socket address families (AF_* numbers) the filter lets socket() and socketpair() use. */
  socketFamilies: number[];
  brokeredFiles: Array<{ path: string; source: string }>;
  network: Profile['network'];
  rlimits: Profile['rlimits'];
}

/**
 * How a task may run in a pre-warmed sandbox. Sandboxes made from the same key are
 * interchangeable; `template` is what such a sandbox is made from (its argv runs the
 * runtime's bootstrap); `control` is the work sent to it at claim (fd 3).
 */
export interface WarmSpec {
  key: string;
  template: { argv: string[]; env: Record<string, string>; files: SandboxFile[] };
  control: string;
  /** A deployed function: its answer arrives on fd 4 and is the invocation's output. */
  handler: boolean;
  /**
   * The handler's answer is complete when its bootstrap closes fd 4 (the runtime's handler
   * contract answers there): the result is sent then, while the runtime is still exiting.
   */
  answerOnReply: boolean;
}

/** A deployed function's opt-in to reusable environments, as its manifest says. */
export interface ReusePolicy {
  /** An environment serves at most this many invocations. */
  maxInvocations: number;
  /** An environment without work for this long is discarded. */
  idleMs: number;
  /** `tmp`: /tmp and /dev/shm are emptied between invocations; `none`: they persist. */
  reset: 'tmp' | 'none';
}

/**
 * How a task runs in a reusable environment. Environments of one key are interchangeable
 * and serve nothing else: the key names tenant, function, version, profile and the
 * limits the sandbox was built with. `template` runs the runtime's bootstrap in `serve` mode.
 */
export interface ReuseSpec extends ReusePolicy {
  key: string;
  owner: { tenant: string; function: string; version: number };
  template: { argv: string[]; env: Record<string, string>; files: SandboxFile[] };
}

export interface SandboxProfileOptions {
  /** Brokered files beyond the profile's own (a deployed function's secrets). */
  extraBrokeredFiles?: ReadonlyArray<{ path: string; source: string }>;
  /** Instead of the profile's network (the canary needs nothing on the host). */
  network?: Profile['network'];
}

/** The profile's section of a task whose code may make the syscalls of `runtimes`. */
export function sandboxProfile(profile: Profile, runtimes: Runtime | readonly Runtime[], options: SandboxProfileOptions = {}): SandboxProfile {
  return {
    name: profile.name,
    filesystem: profile.filesystem,
    landlock: profile.landlock,
    rlimits: profile.rlimits,
    seccompAllow: allowlistFor(profile, runtimes),
    socketFamilies: profile.seccomp.socketFamilies.map((f) => SOCKET_FAMILIES[f]),
    brokeredFiles: [...profile.seccomp.brokeredFiles, ...(options.extraBrokeredFiles ?? [])],
    network: options.network ?? profile.network,
    ...(profile.apparmorProfile ? { apparmorProfile: profile.apparmorProfile } : {}),
  };
}

export interface InlineCode {
  id: string;
  runtime: Runtime;
  code: string;
  args?: readonly string[];
  env?: Readonly<Record<string, string>>;
  stdin?: string;
  limits: Limits;
  profile: Profile;
}

/**
 * Code in a runtime. Cold, it is written to the runtime's source file and run. Warm,
 * sandboxes of one runtime and profile are interchangeable: they start the runtime's
 * bootstrap with the base environment only; the code, arguments and the request's own
 * environment arrive at claim, so nothing of one request is in a sandbox made before it.
 */
export function inlineTask(c: InlineCode): SandboxTask {
  const rt = runtimeDef(c.runtime);
  const args = c.args ?? [];
  const env = c.env ?? {};
  const run = inlineRun(rt, c.code, args);
  const boot = bootstrapFor(rt, 'inline', `${FUNCTION_DIR}/${rt.source}`);
  return {
    id: c.id,
    runtime: c.runtime,
    argv: run.argv,
    env: envFor(env),
    files: run.files,
    stdin: c.stdin ?? '',
    limits: c.limits,
    warm: {
      key: `inline:${c.runtime}:${c.profile.name}`,
      template: { argv: boot.argv, env: { ...BASE_ENV }, files: [boot.file] },
      control: inlineWork(rt, { code: c.code, args, env }),
      handler: false,
      answerOnReply: false,
    },
    profile: sandboxProfile(c.profile, c.runtime),
  };
}

/** A deployed function's code: its files (paths under /fn) and which one is the handler. */
export interface FunctionCode {
  tenant: string;
  name: string;
  version: number;
  runtime: Runtime;
  files: Readonly<Record<string, string>>;
  /** Path (under /fn) of the handler module (node, python) or script (bash). */
  handler: string;
  env: Readonly<Record<string, string>>;
  /** A bundle's unpacked tree (host path), mounted on /fn in place of `files`. */
  fnDir?: string;
  /** Reusable environments, when the function opted in (never for images or bash). */
  reuse?: ReusePolicy;
}

export interface HandlerCall {
  id: string;
  fn: FunctionCode;
  event: unknown;
  context: Record<string, unknown>;
  limits: Limits;
  profile: Profile;
  /** The function's secrets, as brokered files. */
  secrets?: ReadonlyArray<{ path: string; source: string }>;
}

/**
 * A deployed function always runs through its runtime's bootstrap (the handler contract of
 * worker-pool/runtime), cold or warm: a cold start runs exactly what a warm sandbox was
 * made with. Sandboxes of one version and profile are interchangeable, made with the
 * function's files, environment and handler already loaded.
 */
function reuseSpec(c: HandlerCall, rt: RuntimeDef, warm: ReuseSpec['template']): ReuseSpec {
  const serve = bootstrapFor(rt, 'serve', `${FUNCTION_DIR}/${c.fn.handler}`);
  // Limits are part of the key: an environment is made, and checked for memory growth, with them.
  const l = c.limits;
  const limits = [l.timeoutMs, l.memoryMb, l.cpus, l.pids, l.outputBytes].join(',');
  return {
    ...c.fn.reuse!,
    key: `env:${c.fn.tenant}:${c.fn.name}:${c.fn.version}:${c.profile.name}:${limits}`,
    owner: { tenant: c.fn.tenant, function: c.fn.name, version: c.fn.version },
    template: { ...warm, argv: serve.argv },
  };
}

export function handlerTask(c: HandlerCall): SandboxTask {
  const rt = runtimeDef(c.fn.runtime);
  const boot = bootstrapFor(rt, 'handler', `${FUNCTION_DIR}/${c.fn.handler}`);
  // A bundle's tree carries the bootstrap itself (worker-pool/runtime: allBootstraps).
  const files = c.fn.fnDir === undefined ? [...Object.entries(c.fn.files).map(([name, content]) => ({ name, content })), boot.file] : [];
  const template = { argv: boot.argv, env: { ...BASE_ENV, ...c.fn.env }, files };
  const input = handlerInput(rt, c.event, c.context);
  return {
    id: c.id,
    runtime: c.fn.runtime,
    argv: template.argv,
    env: template.env,
    files: template.files,
    ...(c.fn.fnDir === undefined ? {} : { fnDir: c.fn.fnDir }),
    stdin: input.stdin,
    limits: c.limits,
    warm: { key: `fn:${c.fn.tenant}:${c.fn.name}:${c.fn.version}:${c.profile.name}`, template, control: input.control, handler: true, answerOnReply: rt.handler.answer === 'reply' },
    ...(c.fn.reuse && canReuse(rt) ? { reuse: reuseSpec(c, rt, template) } : {}),
    profile: sandboxProfile(c.profile, c.fn.runtime, { extraBrokeredFiles: c.secrets ?? [] }),
  };
}

export interface Command {
  id: string;
  /** argv[0] absolute. */
  argv: string[];
  env?: Readonly<Record<string, string>>;
  stdin?: string;
  limits: Limits;
  profile: Profile;
  /** Whose syscalls the command may make (any of a profile's runtimes, for an arbitrary command). */
  runtimes: readonly Runtime[];
  network?: Profile['network'];
}

/** A command in a sandbox: no /fn files, no warm spec. */
export function commandTask(c: Command): SandboxTask {
  return {
    id: c.id,
    runtime: c.runtimes[0]!,
    argv: c.argv,
    env: envFor(c.env),
    files: [],
    stdin: c.stdin ?? '',
    limits: c.limits,
    profile: sandboxProfile(c.profile, c.runtimes, c.network === undefined ? {} : { network: c.network }),
  };
}

/** An image's process config, as worker-pool/images/ keeps it. */
export interface ImageProcess {
  digest: string;
  rootfs: string;
  env: readonly string[];
  entrypoint: readonly string[];
  cmd: readonly string[];
  workingDir: string;
  user: { uid: number; gid: number };
}

export interface ImageCommand {
  id: string;
  image: ImageProcess;
  /** Replaces the image's Cmd (its Entrypoint stays in front), as `docker run IMAGE cmd…` does. */
  command?: readonly string[];
  /** Replaces the image's Entrypoint (a CI job's script runs under the image's shell, not its Entrypoint). */
  entrypoint?: readonly string[];
  env?: Readonly<Record<string, string>>;
  stdin?: string;
  limits: Limits;
  profile: Profile;
}

/** A profile without an `image` seccomp class refuses image tasks (imageTask throws this). */
export class ImageNotAllowedError extends Error {
  override name = 'ImageNotAllowedError';
}

/**
 * A program from an OCI image: the image's tree is the root; argv is its Entrypoint + Cmd
 * (or + command); env is the image's Env under the request's; the working directory is
 * its WorkingDir. The function's uid inside is always the unprivileged one; the image's
 * User decides which of the image's files it owns. argv[0] without a slash is looked up
 * in the image's PATH, inside the tree, without following symlinks out of it.
 */
export function imageTask(c: ImageCommand): SandboxTask {
  const allow = imageAllowlistFor(c.profile);
  if (!allow) throw new ImageNotAllowedError(`Profile '${c.profile.name}' runs no images: its seccomp policy has no 'image' list`);
  const argv = [...(c.entrypoint ?? c.image.entrypoint), ...(c.command ?? c.image.cmd)];
  if (argv.length === 0) throw new ImageNotAllowedError(`Image ${c.image.digest} has no Entrypoint or Cmd: give a command`);
  const env: Record<string, string> = Object.fromEntries(
    c.image.env.filter((e) => e.includes('=')).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]),
  );
  for (const [k, v] of Object.entries(c.env ?? {})) env[k] = v;
  env.PATH ??= BASE_ENV.PATH!;
  argv[0] = resolveInImage(c.image.rootfs, argv[0]!, env.PATH);
  const root = c.image.user.uid === 0 ? { uid: 1000, gid: 1000 } : { uid: c.image.user.uid, gid: c.image.user.gid || c.image.user.uid };
  const base = sandboxProfile(c.profile, [], {});
  return {
    id: c.id,
    runtime: c.profile.runtimes[0]!,
    argv,
    env,
    files: [],
    stdin: c.stdin ?? '',
    limits: c.limits,
    profile: { ...base, seccompAllow: allow },
    image: { digest: c.image.digest, rootfs: c.image.rootfs, owner: root, workdir: c.image.workingDir || '/' },
  };
}

function resolveInImage(rootfs: string, name: string, path: string): string {
  if (name.startsWith('/')) return name;
  if (!name.includes('/')) {
    for (const dir of path.split(':').filter((d) => d.startsWith('/'))) {
      const candidate = `${dir.replace(/\/+$/, '')}/${name}`;
      if (existsInImage(rootfs, candidate)) return candidate;
    }
  }
  throw new ImageNotAllowedError(`Command ${JSON.stringify(name)} not found in the image's PATH`);
}
