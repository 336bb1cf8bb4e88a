// `zviz invoke`: POST /invoke on a running server, for a deployed function
// (--function NAME --input JSON) or inline code (--runtime R --code FILE|-), printing
// what the invocation printed and exiting as `zviz run` would (exit-codes.ts).
import { readFileSync } from 'node:fs';
import type { Limits } from '../../profiles/schema.js';
import { RUNTIMES } from '../../profiles/schema.js';
import { ENV_KEY_PATTERN, FUNCTION_NAME_PATTERN, PROFILE_NAME_PATTERN, type InvokeReason, type InvokeStatus } from '../invocation/schemas.js';
import {
  helpText,
  noPositionals,
  parseCommandLine,
  parseEnvAssignment,
  parseInteger,
  parseJsonValue,
  shown,
  type OptionSpecs,
  type Parsed,
} from './args.js';
import { EXIT, exitCodeFor, statusLines } from './exit-codes.js';
import { callServer, DEFAULT_URL, FUNCTION_HEADER, refusal, serverFrom } from './http.js';
import { Progress, say, UsageError, utf8OrNull, writeJson, type Io } from './io.js';
import { LIMIT_OPTIONS, limitsObject, parseLimitFlags } from './limits.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const REMOTE_OPTIONS = {
  url: { type: 'string', value: 'URL', help: `server to call (default: $ZVIZ_URL or ${DEFAULT_URL})` },
  key: { type: 'string', value: 'KEY', help: "the tenant's API key (default: $ZVIZ_KEY)" },
} as const satisfies OptionSpecs;

export const INVOKE_OPTIONS = {
  ...REMOTE_OPTIONS,
  function: { type: 'string', short: 'f', value: 'NAME', help: 'a deployed function of your tenant' },
  input: { type: 'string', short: 'i', value: 'JSON', help: "the function's input event, as JSON ('-': read it from stdin; default null)" },
  version: { type: 'string', value: 'N', help: 'version of the function (default: the latest)' },
  runtime: { type: 'string', short: 'r', value: 'RUNTIME', help: `inline code's runtime: ${RUNTIMES.join(', ')}` },
  code: { type: 'string', short: 'c', value: 'FILE', help: "inline code from FILE ('-': from stdin)" },
  env: { type: 'string', short: 'e', multiple: true, value: 'KEY=VALUE', help: "a variable for inline code (repeatable)" },
  'no-stdin': { type: 'boolean', help: "inline code: do not pass this command's stdin to the code" },
  profile: { type: 'string', short: 'p', value: 'NAME', help: "profile to run under (default: the function's, or the server's default)" },
  ...LIMIT_OPTIONS,
  json: { type: 'boolean', help: "print the server's answer as JSON on stdout" },
} as const satisfies OptionSpecs;

export const INVOKE_HELP = helpText(
  'zviz invoke [--url URL] [--key KEY] (--function NAME [--input JSON] | --runtime R --code FILE|-) [options] [-- ARGS…]',
  `Calls POST /invoke on a running server and prints what the invocation printed: inline
code's stdout and stderr as they are; for a function, its output JSON on stdout and what
it printed on stderr. Inline code gets this command's stdin when it is not a terminal,
and the arguments after '--'. Exits as 'zviz run' does.`,
  INVOKE_OPTIONS,
  `exit status: the code's; 124 timeout, 128+N killed by signal N, 137 out of memory,
125 the server refused or could not be reached, 2 bad usage.`,
);

const MAX_CODE_FILE_BYTES = 16 * 1024 * 1024;

/** The fields of POST /invoke's answer this command reads. */
interface InvokeAnswer {
  status: InvokeStatus;
  exitCode: number | null;
  signal: string | null;
  reason: InvokeReason | null;
  stdout: string;
  stderr: string;
  truncated: boolean;
  limits: Limits;
  /** Deployed functions only. */
  output?: unknown;
  error?: { message: string; stack: string | null } | null;
}

function isInvokeAnswer(b: unknown): b is InvokeAnswer {
  if (b === null || typeof b !== 'object') return false;
  const r = b as Record<string, unknown>;
  return typeof r.status === 'string' && typeof r.stdout === 'string' && typeof r.stderr === 'string' && typeof r.limits === 'object';
}

/** The text of FILE, or of stdin for `-`, as --flag names it. */
async function textOf(flag: string, source: string, io: Io): Promise<string> {
  let bytes: Buffer;
  if (source === '-') bytes = await io.stdin.readAll(MAX_CODE_FILE_BYTES);
  else {
    try {
      bytes = readFileSync(source);
    } catch (e) {
      throw new UsageError(`Invalid --${flag}: cannot read ${shown(source)}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`);
    }
  }
  const text = utf8OrNull(bytes);
  if (text === null) throw new UsageError(`Invalid --${flag}: ${source === '-' ? 'stdin' : shown(source)} is not UTF-8 text`);
  return text;
}

async function stdinText(io: Io): Promise<string> {
  const text = utf8OrNull(await io.stdin.readAll(MAX_CODE_FILE_BYTES));
  if (text === null) throw new UsageError('Cannot pass stdin: it is not UTF-8 text (use --no-stdin to pass none)');
  return text;
}

/** The request body, from the flags; everything that can be checked here is. */
export async function invokeBody(values: Parsed<typeof INVOKE_OPTIONS>, io: Io): Promise<Record<string, unknown>> {
  const v = values.values;
  const limits = limitsObject(parseLimitFlags(v));
  const common: Record<string, unknown> = {};
  if (Object.keys(limits).length > 0) common.limits = limits;
  if (v.profile !== undefined) {
    if (!PROFILE_NAME_PATTERN.test(v.profile)) {
      throw new UsageError(`Invalid --profile: must be a profile name: current value is ${shown(v.profile)}`);
    }
    common.profile = v.profile;
  }
  const fn = v.function !== undefined;
  const inline = v.runtime !== undefined || v.code !== undefined;
  if (fn === inline) {
    throw new UsageError(
      fn
        ? 'Invalid flags: --function cannot be combined with --runtime or --code'
        : 'Missing what to invoke: pass --function NAME, or --runtime R with --code FILE',
    );
  }
  if (fn) {
    for (const flag of ['env', 'no-stdin'] as const) {
      if (v[flag] !== undefined) throw new UsageError(`Invalid --${flag}: it applies to inline code, not to --function`);
    }
    if (values.rest !== null && values.rest.length > 0) {
      throw new UsageError("Invalid arguments after '--': they apply to inline code, not to --function");
    }
    if (!FUNCTION_NAME_PATTERN.test(v.function!)) {
      throw new UsageError(
        `Invalid --function: must be lower-case letters, digits and dashes, starting with a letter: current value is ${shown(v.function!)}`,
      );
    }
    const inputText = v.input === '-' ? await textOf('input', '-', io) : v.input;
    const input = inputText === undefined ? null : parseJsonValue('input', inputText);
    return {
      function: v.function,
      input,
      ...(v.version !== undefined ? { version: parseInteger('version', v.version, 1) } : {}),
      ...common,
    };
  }
  if (v.input !== undefined || v.version !== undefined) {
    throw new UsageError(`Invalid --${v.input !== undefined ? 'input' : 'version'}: it applies to --function, not to inline code`);
  }
  const runtime = RUNTIMES.find((r) => r === v.runtime);
  if (runtime === undefined) {
    throw new UsageError(
      v.runtime === undefined
        ? `Missing --runtime: inline code needs one of ${RUNTIMES.join(', ')}`
        : `Invalid --runtime: must be one of ${RUNTIMES.join(', ')}: current value is ${shown(v.runtime)}`,
    );
  }
  if (v.code === undefined) throw new UsageError('Missing --code: inline code needs a FILE, or - to read it from stdin');
  const code = await textOf('code', v.code, io);
  const env: Record<string, string> = {};
  for (const e of v.env ?? []) {
    const [k, val] = parseEnvAssignment('env', e, ENV_KEY_PATTERN);
    env[k] = val;
  }
  // Our stdin becomes the code's, unless it is the code itself or a terminal.
  const passStdin = v.code !== '-' && v['no-stdin'] !== true && !io.stdin.isTTY;
  const stdin = passStdin ? await stdinText(io) : '';
  return {
    runtime,
    code,
    ...(stdin !== '' ? { stdin } : {}),
    ...(values.rest !== null && values.rest.length > 0 ? { args: values.rest } : {}),
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...common,
  };
}

function sameJson(text: string, value: unknown): boolean {
  try {
    return JSON.stringify(JSON.parse(text)) === JSON.stringify(value);
  } catch {
    return false; // not JSON: not the same value
  }
}

export async function invokeCommand(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandLine('invoke', args, INVOKE_OPTIONS);
  if (parsed.help) {
    io.stdout.write(INVOKE_HELP);
    return EXIT.OK;
  }
  noPositionals('invoke', parsed.positionals);
  const server = serverFrom(parsed.values, io.env);
  const body = await invokeBody(parsed, io);
  const json = parsed.values.json === true;

  const progress = new Progress(io.stderr);
  const what = typeof body.function === 'string' ? `function ${body.function}` : `${String(body.runtime)} code`;
  progress.show(`invoking ${what} at ${server.url.origin}…`);
  const routing: Record<string, string> = typeof body.function === 'string' ? { [FUNCTION_HEADER]: body.function } : {};
  const answer = await callServer(server, 'POST', '/invoke', body, routing).finally(() => progress.clear());
  if (answer.status !== 200 || !isInvokeAnswer(answer.body)) {
    throw refusal(answer, EXIT.ZVIZ_FAILED);
  }
  const r = answer.body;
  if (json) writeJson(io.stdout, r);
  else {
    if ('output' in r) {
      // A function: its answer is the output; what it printed is its log (a bash
      // handler's stdout is its answer: not repeated).
      if (!sameJson(r.stdout, r.output)) io.stderr.write(r.stdout);
      io.stderr.write(r.stderr);
      if (r.output !== null && r.output !== undefined) writeJson(io.stdout, r.output);
    } else {
      io.stdout.write(r.stdout);
      io.stderr.write(r.stderr);
    }
    const lines = statusLines(r, r.limits);
    if (r.error) lines.unshift(`the handler failed: ${r.error.message}`);
    if (lines.length > 0) say(io.stderr, lines.join('\n'));
  }
  return exitCodeFor(r);
}

