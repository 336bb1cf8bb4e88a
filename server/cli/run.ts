// `zviz run [options] -- CMD ARGS…`: a local command in a sandbox with the same layers a
// server gives a function (A–E as the profile says), like bwrap or nsjail. Its output
// streams to this terminal as it comes, its stdin is ours (read whole when it is not a
// terminal), and it exits as the command did (exit-codes.ts).
//
// It starts like a command-line tool: the same host lifecycle as a server (worker-pool/host:
// checks, /run/zviz, registry, cgroup parents, nftables table) and the same sandbox setup
// and teardown as a pool worker (worker-pool/local.ts), but no worker pool and no warm
// pool: the one sandbox is made on this thread. It loads only what the command uses (no
// HTTP contract, no piscina).
import { randomUUID } from 'node:crypto';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { loadProfiles, type Limits, type Profile, type Runtime } from '../../profiles/index.js';
import { errorMessage } from '../../worker-pool/util/errors.js';
import { HostError, openHost, type Host } from '../../worker-pool/host/index.js';
import { sandboxId } from '../../worker-pool/host/names.js';
import { runLocal } from '../../worker-pool/local.js';
import type { NativeFailure, OutputChunk, SandboxOutcome } from '../../worker-pool/types.js';
import { BASE_ENV } from '../../worker-pool/runtime/index.js';
import { commandTask, imageTask, ImageNotAllowedError, type SandboxTask } from '../../worker-pool/task.js';
import { DIGEST_PATTERN, ImageError, imagesDir, openImageStore, type ImageRecord } from '../../worker-pool/images/index.js';
import { pullProgressLine } from './image.js';
import type { Config } from '../config.js';
import { configOf, requireRoot } from './preflight.js';
import { toResponse } from '../invocation/response.js';
import { DEFAULT_PROFILE, ENV_KEY_PATTERN } from '../invocation/bounds.js';
import { helpText, parseCommandLine, parseEnvAssignment, shown, type OptionSpecs } from './args.js';
import { EXIT, exitCodeFor, statusLines } from './exit-codes.js';
import { CliError, Progress, say, UsageError, utf8OrNull, writeJson, type Io } from './io.js';
import { LIMIT_OPTIONS, limitsWithin, parseLimitFlags } from './limits.js';

export const RUN_OPTIONS = {
  profile: { type: 'string', short: 'p', value: 'NAME', help: `profile the sandbox follows (default: ${DEFAULT_PROFILE})` },
  ...LIMIT_OPTIONS,
  env: { type: 'string', short: 'e', multiple: true, value: 'KEY=VALUE', help: 'a variable for the command (repeatable)' },
  runtime: {
    type: 'string',
    value: 'RUNTIME',
    help: "seccomp allowlist of this runtime only (node, python, bash); default: all of the profile's runtimes",
  },
  image: {
    type: 'string',
    value: 'REF',
    help: "root the sandbox in this OCI image (a digest or reference in the store; pulled if absent); the command runs after the image's Entrypoint",
  },
  'no-stdin': { type: 'boolean', help: 'do not read stdin: the command gets an empty one' },
  json: { type: 'boolean', help: 'print the result (with the output) as JSON on stdout instead of streaming' },
} as const satisfies OptionSpecs;

export const RUN_HELP = helpText(
  'zviz run [options] -- CMD [ARGS…]',
  `Runs a local command in a fresh sandbox with the profile's layers and limits, and exits as
the command did. Needs root. The command is an absolute path, or a name looked up in
${'/usr/local/bin:/usr/bin:/bin'}; the sandbox sees the host's /usr read-only, a private /tmp,
no network (unless the profile gives egress) and uid 1000. Limits default to the profile's
and may only go up to its maximum.`,
  RUN_OPTIONS,
  `exit status: the command's; 124 timeout, 128+N killed by signal N, 137 out of memory,
125 zviz failed, 127 command not found or not executable, 2 bad usage.`,
);

/** Where a command name is looked up: the sandbox's PATH (BASE_ENV). */
export const SANDBOX_PATH = BASE_ENV.PATH!.split(':');

/** Most stdin passed to the command; it travels in the spec. */
export const MAX_RUN_STDIN_BYTES = 16 * 1024 * 1024;

function hostExecutable(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, fsConstants.X_OK);
    return true;
  } catch {
    return false; // missing, or not ours to execute: look on in PATH
  }
}

/**
 * The command's absolute path. A name is looked up in the sandbox's PATH on the host: the
 * sandbox sees the host's /usr (and /bin as a link into it), so what exists here exists there.
 */
export function resolveCommand(name: string, isExecutable: (path: string) => boolean = hostExecutable): string {
  if (name.includes('/')) {
    if (!name.startsWith('/')) {
      throw new UsageError(`Invalid command ${shown(name)}: must be an absolute path or a name found in ${SANDBOX_PATH.join(':')}`);
    }
    return name;
  }
  if (name === '' || name === '.' || name === '..') throw new UsageError(`Invalid command ${shown(name)}: must name a program`);
  for (const dir of SANDBOX_PATH) {
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  throw new CliError(
    `Cannot find command ${shown(name)} in ${SANDBOX_PATH.join(':')} (the sandbox sees the host's /usr)`,
    EXIT.NOT_FOUND,
    'NOT_FOUND',
  );
}

export interface RunPlan {
  profile: Profile;
  limits: Limits;
  argv: string[];
  /** The command's variables over BASE_ENV. */
  env: Record<string, string>;
  /** Whose syscalls the command may make: the profile's runtimes, or the one of --runtime. */
  runtimes: readonly Runtime[];
  readStdin: boolean;
  json: boolean;
  /** --image: the reference; argv is then the command as given, resolved in the image. */
  image: string | null;
}

/** Parses and checks everything about `zviz run` that needs no privilege. null: --help. */
export function planRun(
  args: readonly string[],
  profiles: ReadonlyMap<string, Profile>,
  isExecutable?: (path: string) => boolean,
): RunPlan | null {
  const { values, positionals, rest, help } = parseCommandLine('run', args, RUN_OPTIONS);
  if (help) return null;
  if (rest === null) throw new UsageError("Missing '--' before the command: usage is 'zviz run [options] -- CMD [ARGS…]'");
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument ${shown(positionals[0]!)} before '--': the command goes after '--', as in 'zviz run -- /usr/bin/id'`);
  }
  if (rest.length === 0) throw new UsageError("Missing command after '--': usage is 'zviz run [options] -- CMD [ARGS…]'");
  for (const a of rest) if (a.includes('\0')) throw new UsageError('Invalid command: arguments must not contain NUL characters');

  const profileName = values.profile ?? DEFAULT_PROFILE;
  const profile = profiles.get(profileName);
  if (profile === undefined) {
    throw new UsageError(`Invalid --profile: no profile is named ${shown(profileName)}: known profiles are ${[...profiles.keys()].join(', ')}`);
  }
  const limits = limitsWithin(profile, parseLimitFlags(values, true));

  let runtimes: readonly Runtime[] = profile.runtimes;
  if (values.runtime !== undefined) {
    const r = profile.runtimes.find((x) => x === values.runtime);
    if (r === undefined) {
      throw new UsageError(
        `Invalid --runtime: profile '${profile.name}' allows ${profile.runtimes.join(', ')}: current value is ${shown(values.runtime)}`,
      );
    }
    runtimes = [r];
  }
  const env: Record<string, string> = {};
  for (const e of values.env ?? []) {
    const [k, v] = parseEnvAssignment('env', e, ENV_KEY_PATTERN);
    env[k] = v;
  }
  const image = values.image ?? null;
  const argv = image === null ? [resolveCommand(rest[0]!, isExecutable), ...rest.slice(1)] : [...rest];
  return {
    profile,
    limits,
    argv,
    env,
    // Any command: the union of what the profile lets any of its (chosen) runtimes call.
    runtimes,
    readStdin: values['no-stdin'] !== true,
    json: values.json === true,
    image,
  };
}

/** The task for a plan: the command as argv, no /fn files, no warm spec. */
export function runTask(plan: RunPlan, id: string, stdin: string): SandboxTask {
  return commandTask({ id, argv: plan.argv, env: plan.env, stdin, limits: plan.limits, profile: plan.profile, runtimes: plan.runtimes });
}

/** The sandbox could not be made (or the command not started in it): zviz failed, 125. */
export function nativeFailureError(f: NativeFailure): CliError {
  return new CliError(`Cannot create sandbox: ${f.message}`, EXIT.ZVIZ_FAILED, 'SANDBOX_UNAVAILABLE');
}

/**
 * What the result holds beyond what was streamed: the sandbox reports a failed execve on
 * stderr after the fact, not as streamed output. Only a strict continuation is written.
 */
export function unstreamedTail(streamed: readonly Uint8Array[], whole: string): Buffer {
  const sent = Buffer.concat(streamed);
  const all = Buffer.from(whole, 'utf8');
  if (all.length <= sent.length || !all.subarray(0, sent.length).equals(sent)) return Buffer.alloc(0);
  return all.subarray(sent.length);
}

function loadSetup(io: Io): { config: Config; profiles: Map<string, Profile> } {
  const config = configOf(io);
  try {
    return { config, profiles: loadProfiles(config.profilesDir) };
  } catch (e) {
    throw new CliError(errorMessage(e), EXIT.ZVIZ_FAILED, 'PROFILE');
  }
}

async function readStdin(io: Io, plan: RunPlan): Promise<string> {
  if (!plan.readStdin || io.stdin.isTTY) return '';
  const bytes = await io.stdin.readAll(MAX_RUN_STDIN_BYTES);
  const text = utf8OrNull(bytes);
  // The spec carries stdin as text: binary bytes would arrive changed, so refuse them.
  if (text === null) throw new UsageError('Cannot pass stdin: it is not UTF-8 text (binary input is not supported; use --no-stdin to pass none)');
  return text;
}

/**
 * Opens the host as a server's start-up does (registered, cgroups prepared and swept, the
 * nftables table for an egress profile), runs `fn`, and closes it: what no other live
 * server (or `zviz run`) needs goes.
 */
async function withLocalHost<T>(config: Config, plan: RunPlan, fn: (host: Host) => Promise<T>): Promise<T> {
  let host: Host;
  try {
    host = openHost({
      uidBase: config.uidBase,
      net: config.net,
      profiles: [plan.profile],
      allowTestProfiles: config.allowTestProfiles,
      imagesDir: imagesDir(config.stateDir),
    });
  } catch (e) {
    if (e instanceof HostError && e.kind === 'requirements') throw hostFailure(e.lines);
    throw new CliError(errorMessage(e), EXIT.ZVIZ_FAILED, 'HOST');
  }
  try {
    return await fn(host);
  } finally {
    host.close();
  }
}

/**
 * ^C (or SIGTERM, SIGHUP) stops the sandbox and lets the normal clean-up run; a second
 * one exits at once (the supervisor still kills the sandbox when we are gone).
 */
function onInterrupt(stop: () => void, host: Host): { signal: () => NodeJS.Signals | null; dispose: () => void } {
  let got: NodeJS.Signals | null = null;
  let timer: NodeJS.Timeout | null = null;
  const handler = (sig: NodeJS.Signals): void => {
    if (got !== null) {
      host.close();
      process.exit(EXIT.SIGNAL_BASE + osConstants.signals[sig]);
    }
    got = sig;
    stop();
    // The sandbox may not exist yet: keep trying until the invocation ends.
    timer = setInterval(stop, 100);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, handler);
  return {
    signal: () => got,
    dispose: () => {
      if (timer) clearInterval(timer);
      for (const s of signals) process.off(s, handler);
    },
  };
}

function hostFailure(lines: string[]): CliError {
  return new CliError(`Cannot run a sandbox on this host:\n${lines.join('\n')}\n(see 'zviz doctor')`, EXIT.ZVIZ_FAILED, 'HOST');
}

export async function runCommand(args: readonly string[], io: Io): Promise<number> {
  // --help and flag syntax first: neither needs the configuration or the profiles.
  if (parseCommandLine('run', args, RUN_OPTIONS).help) {
    io.stdout.write(RUN_HELP);
    return EXIT.OK;
  }
  const { config, profiles } = loadSetup(io);
  const plan = planRun(args, profiles)!;
  requireRoot('run', 'run a sandbox', 'namespaces, mounts and cgroups are set up by root', EXIT.ZVIZ_FAILED);
  const stdin = await readStdin(io, plan);
  const progress = new Progress(io.stderr);
  progress.show('checking host…');
  const id = randomUUID();
  let release = (): void => {};
  let task: SandboxTask;
  if (plan.image !== null) {
    const store = openImageStore(config.stateDir, config.images);
    let record: ImageRecord;
    try {
      // A bare digest names what is stored; anything else is pulled when absent.
      record = DIGEST_PATTERN.test(plan.image)
        ? store.resolve(plan.image)
        : (store.get(plan.image) ?? (await store.pull(plan.image, (p) => progress.show(pullProgressLine(plan.image!, p)))));
      task = imageTask({
        id,
        image: { ...record.config, digest: record.digest, rootfs: store.rootfs(record.digest) },
        command: plan.argv,
        env: plan.env,
        stdin,
        limits: plan.limits,
        profile: plan.profile,
      });
    } catch (e) {
      progress.clear();
      if (e instanceof ImageError) throw new CliError(e.message, e.code === 'INVALID_REFERENCE' ? EXIT.USAGE : EXIT.ZVIZ_FAILED, e.code);
      if (e instanceof ImageNotAllowedError) throw new CliError(e.message, EXIT.NOT_FOUND, 'NOT_FOUND');
      throw e;
    }
    release = store.acquire(record.digest);
  } else {
    task = runTask(plan, id, stdin);
  }
  const streamed: Record<'stdout' | 'stderr', Uint8Array[]> = { stdout: [], stderr: [] };
  let unenforced: readonly string[] = [];
  const outcome = await withLocalHost(config, plan, async (host): Promise<{ result: SandboxOutcome; interrupted: NodeJS.Signals | null }> => {
    unenforced = host.facts.landlock.unenforced;
    const interrupt = onInterrupt(() => host.killSandboxes(sandboxId(id)), host);
    progress.show(`starting sandbox (profile ${plan.profile.name})…`);
    try {
      const onOutput = plan.json
        ? undefined
        : (chunk: OutputChunk): void => {
            progress.clear();
            streamed[chunk.stream].push(chunk.data);
            (chunk.stream === 'stdout' ? io.stdout : io.stderr).write(chunk.data);
          };
      return { result: await runLocal(task, host.layout, onOutput), interrupted: interrupt.signal() };
    } finally {
      interrupt.dispose();
    }
  }).finally(() => {
    progress.clear();
    release();
  });

  if (!outcome.result.ok) throw nativeFailureError(outcome.result.error);
  const response = toResponse(id, plan.profile.name, plan.limits, outcome.result, unenforced);
  if (plan.json) writeJson(io.stdout, response);
  else {
    io.stdout.write(unstreamedTail(streamed.stdout, response.stdout));
    io.stderr.write(unstreamedTail(streamed.stderr, response.stderr));
    const lines = statusLines(response, plan.limits);
    if (outcome.interrupted) lines.unshift(`interrupted by ${outcome.interrupted}: the sandbox was stopped`);
    // Said to a person only: a script reads `unenforced` from --json.
    if (io.stderr.isTTY && response.unenforced.length > 0) {
      lines.push(`note: this kernel's Landlock could not enforce ${response.unenforced.join(', ')}`);
    }
    if (lines.length > 0) say(io.stderr, lines.join('\n'));
  }
  if (outcome.interrupted) return EXIT.SIGNAL_BASE + osConstants.signals[outcome.interrupted];
  return exitCodeFor(response);
}
