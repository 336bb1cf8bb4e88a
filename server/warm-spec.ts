// How an invocation may run in a pre-warmed sandbox (worker-pool/warm.ts): which pool it
// draws from, what that pool's sandboxes are made of, and the work sent at claim.
import type { Profile, Runtime } from '../profiles/schema.js';
import { bootstrapFor } from '../worker-pool/bootstrap.js';
import type { WarmSpec } from '../worker-pool/types.js';
import { BASE_ENV, FUNCTION_DIR, RUNTIME_SPECS } from './runtimes.js';

/**
 * Inline code: sandboxes of one runtime and profile are interchangeable. They start the
 * runtime with the base environment only; the code, arguments and the request's own
 * environment arrive at claim, so nothing of one request is in a sandbox made before it.
 */
export function inlineWarmSpec(
  runtime: Runtime,
  profile: Profile,
  code: string,
  args: readonly string[] = [],
  env: Readonly<Record<string, string>> = {},
): WarmSpec {
  const entry = `${FUNCTION_DIR}/${RUNTIME_SPECS[runtime].file}`;
  const boot = bootstrapFor(runtime, 'inline', entry);
  // bash reads NUL-separated fields: code, NAME=VALUE…, an empty field, then the args.
  const control =
    runtime === 'bash'
      ? [code, ...Object.entries(env).map(([k, v]) => `${k}=${v}`), '', ...args].join('\0') + '\0'
      : JSON.stringify({ code, args, env });
  return {
    key: `inline:${runtime}:${profile.name}`,
    template: { argv: boot.argv, env: { ...BASE_ENV }, files: [boot.file] },
    control,
    handler: false,
  };
}

/** A deployed function's code: its files (paths under /fn) and which one is the handler. */
export interface FunctionCode {
  tenant: string;
  name: string;
  version: number;
  runtime: Runtime;
  files: Record<string, string>;
  /** Path (under /fn) of the handler module (node, python) or script (bash). */
  handler: string;
  env: Readonly<Record<string, string>>;
}

/**
 * A deployed function always runs through its runtime's bootstrap (the handler
 * contract): node `export default async (event, context) => result` (or `handler`),
 * python `def handler(event, context)`, bash reads the event JSON on stdin and prints the
 * result JSON on stdout. Sandboxes of one version and profile are interchangeable, and
 * are made with the function's files, environment and handler already loaded.
 */
export function functionWarmSpec(fn: FunctionCode, profile: Profile, event: unknown, context: Record<string, unknown>): WarmSpec {
  const entry = `${FUNCTION_DIR}/${fn.handler}`;
  const boot = bootstrapFor(fn.runtime, 'handler', entry);
  const files = [...Object.entries(fn.files).map(([name, content]) => ({ name, content })), boot.file];
  return {
    key: `fn:${fn.tenant}:${fn.name}:${fn.version}:${profile.name}`,
    template: { argv: boot.argv, env: { ...BASE_ENV, ...fn.env }, files },
    // bash receives the event on stdin instead (see the caller's task.stdin).
    control: fn.runtime === 'bash' ? '' : JSON.stringify({ event, context }),
    handler: true,
  };
}

/** What a deployed function answered, from its bootstrap's reply (or bash's stdout). */
export type HandlerAnswer =
  | { ok: true; output: unknown }
  | { ok: false; error: { message: string; stack: string | null } };

export function parseAnswer(runtime: Runtime, reply: string | null, stdout: string): HandlerAnswer | null {
  const text = runtime === 'bash' ? stdout : reply;
  if (text === null || text.trim() === '') return null;
  try {
    const v = JSON.parse(text) as unknown;
    if (runtime === 'bash') return { ok: true, output: v };
    if (v && typeof v === 'object' && 'ok' in v) return v as HandlerAnswer;
    return { ok: false, error: { message: 'The runtime bootstrap answered something unexpected', stack: null } };
  } catch {
    const what = runtime === 'bash' ? 'stdout is not JSON' : 'the answer is not JSON';
    return { ok: false, error: { message: `Cannot read the function's result: ${what}`, stack: null } };
  }
}
