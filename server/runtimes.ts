// How each runtime runs inline code, and the environment every sandbox starts from.
import type { Runtime } from '../profiles/schema.js';

/** Where the native layer writes the function's files, read-only, inside the sandbox. */
export const FUNCTION_DIR = '/fn';

export interface RuntimeSpec {
  /** Absolute path of the interpreter inside the sandbox. */
  interpreter: string;
  /** File name the code is written to under FUNCTION_DIR. */
  file: string;
}

export const RUNTIME_SPECS: Readonly<Record<Runtime, RuntimeSpec>> = {
  node: { interpreter: '/usr/bin/node', file: 'main.js' },
  python: { interpreter: '/usr/bin/python3', file: 'main.py' },
  bash: { interpreter: '/usr/bin/bash', file: 'main.sh' },
};

export function argvFor(runtime: Runtime, args: readonly string[] = []): string[] {
  const spec = RUNTIME_SPECS[runtime];
  return [spec.interpreter, `${FUNCTION_DIR}/${spec.file}`, ...args];
}

/**
 * The whole starting environment of a sandbox. It is a literal on purpose: nothing from
 * the server's own process.env (tokens, Redis URLs, paths of the host) may reach a function.
 */
export const BASE_ENV: Readonly<Record<string, string>> = Object.freeze({
  PATH: '/usr/local/bin:/usr/bin:/bin',
  HOME: '/tmp',
  LANG: 'C.UTF-8',
});

/** The request's variables over BASE_ENV; the request may override the base ones. */
export function envFor(requested: Readonly<Record<string, string>> = {}): Record<string, string> {
  // Object.fromEntries defines own properties, so no key can reach a prototype.
  return Object.fromEntries([...Object.entries(BASE_ENV), ...Object.entries(requested)]);
}
