// `zviz deploy DIR`: a function directory — manifest.json plus the function's files beside
// it — sent as PUT /functions/:name. The manifest is checked here, so a typo is named
// before anything is uploaded; the server checks the rest (profile, limits, sizes).
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import * as tar from 'tar';
import type { z } from 'zod';
import { MANIFEST, manifestSchema } from '../functions/examples.js';
import { helpText, parseCommandLine, shown, type OptionSpecs } from './args.js';
import { EXIT } from './exit-codes.js';
import { callServer, refusal, serverFrom, uploadFile, type Server } from './http.js';
import { CliError, Progress, UsageError, utf8OrNull, writeJson, type Io } from './io.js';
import { REMOTE_OPTIONS } from './invoke.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const DEPLOY_OPTIONS = {
  ...REMOTE_OPTIONS,
  json: { type: 'boolean', help: "print the server's answer (the function's metadata) as JSON on stdout" },
  bundle: { type: 'boolean', help: 'send DIR as a .tar.gz bundle (automatic when DIR has node_modules)' },
} as const satisfies OptionSpecs;

export const DEPLOY_HELP = helpText(
  'zviz deploy [--url URL] [--key KEY] [--json] DIR',
  `Deploys the function in DIR: DIR/${MANIFEST} says
  { "name": "hello", "runtime": "node" | "python" | "bash", "handler": "main.js",
    "description"?: "…", "profile"?: "default", "limits"?: { "timeoutMs": 2000, … }, "env"?: { … } }
and every other file under DIR (hidden ones excepted) is the function's code, by its path
relative to DIR. Prints the name and the new version.

With --bundle, or when DIR has a node_modules directory, DIR (without the manifest and
top-level hidden entries) is packed into a .tar.gz, streamed to POST /uploads and deployed
by its digest: dependencies (node_modules, a vendored Python package) and binary files
are fine, up to the server's bundle cap (64 MiB by default).`,
  DEPLOY_OPTIONS,
);

/** Stops reading a directory that is clearly not a function (the server takes 1 MiB). */
const MAX_SCAN_FILES = 1000;
const MAX_SCAN_BYTES = 64 * 1024 * 1024;

export type Manifest = z.infer<typeof manifestSchema>;

export function parseManifest(file: string, text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`Invalid ${file}: not JSON: ${errorMessage(e)}`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const path = issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : issue.path.join('.') || '(top level)';
  const message = issue.code === 'unrecognized_keys' ? 'is not a manifest field' : issue.message;
  let value: unknown = raw;
  for (const k of issue.path) value = value !== null && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[k] : undefined;
  const current = issue.code === 'unrecognized_keys' || value === undefined ? '' : `: current value is ${JSON.stringify(value)}`;
  throw new UsageError(`Invalid ${file}: field '${path}' ${message}${current}`);
}

/** Every regular file under `dir` but the manifest and hidden entries, by relative path. */
export function functionFiles(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  let count = 0;
  let bytes = 0;
  const walk = (at: string): void => {
    for (const name of readdirSync(at).sort()) {
      if (name.startsWith('.')) continue;
      const full = join(at, name);
      const rel = relative(dir, full).split(sep).join('/');
      if (rel === MANIFEST) continue;
      const st = lstatSync(full);
      if (st.isDirectory()) {
        walk(full);
        continue;
      }
      // A link could point anywhere on this machine: deploy only what is in DIR.
      if (!st.isFile()) throw new UsageError(`Cannot deploy ${shown(dir)}: ${shown(rel)} is not a regular file (links and devices are not deployed)`);
      count++;
      bytes += st.size;
      if (count > MAX_SCAN_FILES || bytes > MAX_SCAN_BYTES) {
        throw new UsageError(
          `Cannot deploy ${shown(dir)}: it holds more than ${MAX_SCAN_FILES} files or ${MAX_SCAN_BYTES} bytes: is it a function directory?`,
        );
      }
      const text = utf8OrNull(readFileSync(full));
      if (text === null) throw new UsageError(`Cannot deploy ${shown(dir)}: ${shown(rel)} is not UTF-8 text (binary files cannot be deployed)`);
      files[rel] = text;
    }
  };
  walk(dir);
  if (count === 0) throw new UsageError(`Cannot deploy ${shown(dir)}: it has no files besides ${MANIFEST}`);
  return files;
}

/** The PUT /functions/:name body of a function directory. */
export function deployRequest(dir: string): { name: string; body: Record<string, unknown> } {
  const { root, name, rest } = readFunctionDir(dir);
  return { name, body: { ...rest, files: functionFiles(root) } };
}

/** Whether DIR is sent as a bundle without being asked: it carries node_modules. */
export function wantsBundle(dir: string): boolean {
  return existsSync(join(resolve(dir), 'node_modules'));
}

/**
 * Packs a function directory into a .tar.gz at `out`: everything but the manifest and
 * top-level hidden entries; links are stored as links (the server refuses those that
 * point out of the bundle).
 */
export async function packBundle(dir: string, out: string): Promise<{ name: string; body: Record<string, unknown> }> {
  const { root, name, rest } = readFunctionDir(dir);
  const entries = readdirSync(root)
    .filter((n) => !n.startsWith('.') && n !== MANIFEST)
    .sort();
  if (entries.length === 0) throw new UsageError(`Cannot deploy ${shown(dir)}: it has no files besides ${MANIFEST}`);
  await tar.c({ gzip: true, cwd: root, file: out, portable: true, follow: false }, entries);
  return { name, body: rest };
}

function readFunctionDir(dir: string): { root: string; name: string; rest: Record<string, unknown> } {
  const root = resolve(dir);
  let st;
  try {
    st = lstatSync(root);
  } catch {
    throw new UsageError(`Invalid DIR: ${shown(dir)} does not exist`);
  }
  if (!st.isDirectory()) throw new UsageError(`Invalid DIR: ${shown(dir)} is not a directory`);
  const manifestPath = join(root, MANIFEST);
  let text: string;
  try {
    text = readFileSync(manifestPath, 'utf8');
  } catch {
    throw new UsageError(`Invalid DIR: ${shown(dir)} has no ${MANIFEST}`);
  }
  const { name, description: _description, ...rest } = parseManifest(join(dir, MANIFEST), text);
  return { root, name, rest };
}

export async function deployCommand(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandLine('deploy', args, DEPLOY_OPTIONS);
  if (parsed.help) {
    io.stdout.write(DEPLOY_HELP);
    return EXIT.OK;
  }
  const dirs = [...parsed.positionals, ...(parsed.rest ?? [])];
  if (dirs.length !== 1) {
    throw new UsageError(
      dirs.length === 0 ? 'Missing DIR: usage is zviz deploy [options] DIR' : `Unexpected argument ${shown(dirs[1]!)}: deploy takes one DIR`,
    );
  }
  const server = serverFrom(parsed.values, io.env);
  const json = parsed.values.json === true;
  const progress = new Progress(io.stderr);
  let name: string;
  let body: Record<string, unknown>;
  if (parsed.values.bundle === true || wantsBundle(dirs[0]!)) {
    ({ name, body } = await uploadBundle(server, dirs[0]!, progress));
  } else {
    ({ name, body } = deployRequest(dirs[0]!));
    progress.show(`deploying ${name} (${Object.keys(body.files as object).length} files) to ${server.url.origin}…`);
  }
  const answer = await callServer(server, 'PUT', `/functions/${name}`, body).finally(() => progress.clear());
  if (answer.status === 200 || answer.status === 201) {
    const meta = answer.body as { name?: unknown; version?: unknown };
    if (json) writeJson(io.stdout, answer.body);
    else io.stdout.write(`${String(meta.name ?? name)} version ${String(meta.version)}${answer.status === 200 ? ' (unchanged)' : ''}\n`);
    return EXIT.OK;
  }
  if (answer.status === 405 || (answer.status === 404 && (answer.body as { error?: { code?: string } })?.error?.code === 'NOT_FOUND')) {
    throw new CliError(
      `Cannot deploy: the server at ${server.url.origin} has no PUT /functions/:name (it predates deployed functions)`,
      EXIT.FAILURE,
      'NO_DEPLOY_API',
    );
  }
  throw refusal(answer, EXIT.FAILURE);
}

/** Packs DIR to a temporary .tar.gz, streams it to POST /uploads, and returns the deploy naming its digest. */
async function uploadBundle(server: Server, dir: string, progress: Progress): Promise<{ name: string; body: Record<string, unknown> }> {
  const tmp = mkdtempSync(join(tmpdir(), 'zviz-bundle-'));
  try {
    const file = join(tmp, 'bundle.tar.gz');
    progress.show(`packing ${shown(dir)}…`);
    const { name, body } = await packBundle(dir, file);
    progress.show(`uploading ${name} (${statSync(file).size} bytes) to ${server.url.origin}…`);
    const up = await uploadFile(server, '/uploads', file);
    if (up.status !== 200 && up.status !== 201) throw refusal(up, EXIT.FAILURE);
    const digest = (up.body as { digest?: unknown }).digest;
    if (typeof digest !== 'string') throw new CliError(`The server answered the upload without a digest: ${up.text.slice(0, 200)}`, EXIT.FAILURE, 'HTTP');
    progress.show(`deploying ${name} (bundle ${digest.slice(0, 19)}…) to ${server.url.origin}…`);
    return { name, body: { ...body, bundle: digest } };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
