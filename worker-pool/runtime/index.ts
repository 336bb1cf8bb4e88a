// Everything ZViz knows about a runtime, in one record per runtime: where its sandbox root
// comes from, which file inline code is written to, the argv that runs it, its warm
// bootstrap (worker-pool/runtime/bootstrap/*), how work is encoded for that bootstrap, and
// how a deployed function's event goes in and its answer comes out. Code reads the record;
// nothing else branches on a runtime's name. A runtime defined as data (an image root, a
// compile step before the run step) is another record of the same shape.
import { deeperThan, MAX_JSON_DEPTH } from '../util/json-depth.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../util/package-root.js';
import type { Runtime } from '../../profiles/schema.js';

/** Where the native layer writes the function's files, read-only, inside the sandbox. */
export const FUNCTION_DIR = '/fn';

/** In a run argv: the path of the source file under FUNCTION_DIR. */
export const SOURCE_PLACEHOLDER = '{source}';

export interface RuntimeDef {
  name: Runtime;
  /** Where the sandbox's root comes from: the host's /usr, read-only. */
  root: { kind: 'host' };
  /** File name inline code is written to under FUNCTION_DIR; a deployed function's default handler. */
  source: string;
  /** The run step: argv[0] absolute; SOURCE_PLACEHOLDER stands for the source file. A request's args follow. */
  run: readonly string[];
  /** The bootstrap a warm sandbox (and every deployed function) runs, and how work reaches it on fd 3. */
  bootstrap: {
    /** File under bootstrap/, copied into the sandbox as FUNCTION_DIR/.zviz/bootstrap-<file>. */
    file: string;
    interpreter: string;
    /** Inline work (code, args, env): one JSON object, or NUL-separated fields for a shell's `read -d ''`. */
    work: 'json' | 'nul-fields';
  };
  /** The handler contract of a deployed function. */
  handler: {
    /** File name endings a handler must have; null: any. */
    extensions: readonly string[] | null;
    /** `{ event, context }` as JSON on fd 3, or the event's JSON alone on stdin. */
    event: 'control' | 'stdin';
    /** `{ ok, output | error }` written by the bootstrap on fd 4, or the handler's stdout as the output JSON. */
    answer: 'reply' | 'stdout';
  };
}

/** A runtime whose interpreter runs from the host's /usr: the run step is `interpreter source`. */
function hostInterpreter(
  name: Runtime,
  source: string,
  interpreter: string,
  bootstrap: Omit<RuntimeDef['bootstrap'], 'interpreter'>,
  handler: RuntimeDef['handler'],
): RuntimeDef {
  return { name, root: { kind: 'host' }, source, run: [interpreter, SOURCE_PLACEHOLDER], bootstrap: { ...bootstrap, interpreter }, handler };
}

export const RUNTIMES: Readonly<Record<Runtime, RuntimeDef>> = {
  node: hostInterpreter('node', 'main.js', '/usr/bin/node', { file: 'node.js', work: 'json' }, { extensions: ['.js', '.cjs', '.mjs'], event: 'control', answer: 'reply' }),
  python: hostInterpreter('python', 'main.py', '/usr/bin/python3', { file: 'python.py', work: 'json' }, { extensions: ['.py'], event: 'control', answer: 'reply' }),
  // bash reads its work with `read -d ''`, and its handler contract is the shell's: stdin in, stdout out.
  bash: hostInterpreter('bash', 'main.sh', '/usr/bin/bash', { file: 'bash.sh', work: 'nul-fields' }, { extensions: null, event: 'stdin', answer: 'stdout' }),
};

/**
 * Whether a runtime's bootstrap can serve a reusable environment (`serve` mode): its
 * event arrives as a control message and its answer as a reply, both of which can be
 * framed; a shell's contract (stdin to EOF, stdout) is one process per invocation.
 */
export function canReuse(rt: RuntimeDef): boolean {
  return rt.handler.event === 'control' && rt.handler.answer === 'reply';
}

export function runtimeDef(name: Runtime): RuntimeDef {
  return RUNTIMES[name];
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

export interface SandboxFile {
  /** Path relative to FUNCTION_DIR; nested paths are fine. */
  name: string;
  content: string;
}

/** Inline code run cold: its source file, and the run argv with the request's arguments. */
export function inlineRun(rt: RuntimeDef, code: string, args: readonly string[] = []): { argv: string[]; files: SandboxFile[] } {
  const source = `${FUNCTION_DIR}/${rt.source}`;
  return { argv: [...rt.run.map((a) => (a === SOURCE_PLACEHOLDER ? source : a)), ...args], files: [{ name: rt.source, content: code }] };
}

const bootstraps = new Map<string, string>();

function bootstrapContent(rt: RuntimeDef): string {
  const { file } = rt.bootstrap;
  let content = bootstraps.get(file);
  if (content === undefined) {
    const path = join(PACKAGE_ROOT, 'worker-pool', 'runtime', 'bootstrap', file);
    try {
      content = readFileSync(path, 'utf8');
    } catch (e) {
      throw new Error(`Cannot read the ${rt.name} runtime bootstrap ${path}: ${e instanceof Error ? e.message : String(e)}`);
    }
    bootstraps.set(file, content);
  }
  return content;
}

/** Where a runtime's bootstrap lies under FUNCTION_DIR: `.zviz`, a name no deployed file or bundle entry may use. */
function bootstrapName(rt: RuntimeDef): string {
  return `.zviz/bootstrap-${rt.bootstrap.file}`;
}

/**
 * The bootstrap file a sandbox gets (under FUNCTION_DIR/.zviz, where no deployed file may
 * be) and the argv that runs it: `inline` waits for code on fd 3, `handler` loads `entry`,
 * `serve` loads `entry` and answers framed invocations one at a time (a reusable environment).
 */
export function bootstrapFor(rt: RuntimeDef, mode: 'handler' | 'inline' | 'serve', entry: string): { file: SandboxFile; argv: string[] } {
  const name = bootstrapName(rt);
  return { file: { name, content: bootstrapContent(rt) }, argv: [rt.bootstrap.interpreter, `${FUNCTION_DIR}/${name}`, mode, entry] };
}

/**
 * Every runtime's bootstrap file: a bundle's unpacked tree carries them, because the tree
 * is mounted on FUNCTION_DIR in place of the files the native layer would write there.
 */
export function allBootstraps(): SandboxFile[] {
  return Object.values(RUNTIMES).map((rt) => ({ name: bootstrapName(rt), content: bootstrapContent(rt) }));
}

/** Inline work for a warm sandbox's bootstrap, encoded as it reads it from fd 3. */
export function inlineWork(
  rt: RuntimeDef,
  work: { code: string; args: readonly string[]; env: Readonly<Record<string, string>> },
): string {
  if (rt.bootstrap.work === 'json') return JSON.stringify({ code: work.code, args: work.args, env: work.env });
  // Code, NAME=VALUE…, an empty field, then the args; NUL cannot occur in any of them.
  return [work.code, ...Object.entries(work.env).map(([k, v]) => `${k}=${v}`), '', ...work.args].join('\0') + '\0';
}

/** How a deployed function's event reaches its handler: the control message (fd 3) and stdin. */
export function handlerInput(rt: RuntimeDef, event: unknown, context: Record<string, unknown>): { control: string; stdin: string } {
  return rt.handler.event === 'control'
    ? { control: JSON.stringify({ event, context }), stdin: '' }
    : { control: '', stdin: JSON.stringify(event) };
}

/** What a deployed function answered, from its bootstrap's reply or its stdout. */
export type HandlerAnswer =
  | { ok: true; output: unknown }
  | { ok: false; error: { message: string; stack: string | null } };

/** The answer, or null when the handler gave none. */
export function parseAnswer(rt: RuntimeDef, reply: string | null, stdout: string): HandlerAnswer | null {
  const fromStdout = rt.handler.answer === 'stdout';
  const text = fromStdout ? stdout : reply;
  if (text === null || text.trim() === '') return null;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    const what = fromStdout ? 'stdout is not JSON' : 'the answer is not JSON';
    return { ok: false, error: { message: `Cannot read the function's result: ${what}`, stack: null } };
  }
  // The answer goes back out through JSON.stringify, which recurses: bound its depth as the
  // input's is. A bootstrap's reply wraps the output one level deeper ({ ok, output }).
  if (deeperThan(v, MAX_JSON_DEPTH + (fromStdout ? 0 : 1))) {
    return { ok: false, error: { message: `Cannot read the function's result: it is nested deeper than ${MAX_JSON_DEPTH} levels`, stack: null } };
  }
  if (fromStdout) return { ok: true, output: v };
  if (v && typeof v === 'object' && 'ok' in v) return v as HandlerAnswer;
  return { ok: false, error: { message: 'The runtime bootstrap answered something unexpected', stack: null } };
}

/** Why a handler that ran to its end gave no answer, in its contract's words. */
export function noAnswerMessage(rt: RuntimeDef): string {
  const what = rt.handler.answer === 'stdout' ? 'printed nothing on stdout' : 'ended without answering';
  return `Cannot read the function's result: the handler ${what}`;
}
