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
