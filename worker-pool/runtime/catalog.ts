// The language catalog: one JSON definition per language under worker-pool/runtime/catalog/
// (or ZVIZ_RUNTIMES_DIR), validated by this schema at start-up like the profiles. A
// definition says where the language's root comes from (the host, or an image), which file
// the code is written to, an optional compile step and the run step (argv and the compile
// step's limit defaults), and which syscall allowlist class of the profiles its steps use.
//
// The compile step is its own sandbox, made, limited and killed by the trusted side exactly
// like any invocation, so its limits (time, memory, pids, CPU, output) are enforced
// separately from the run step's without any change to the native layer. The artifact
// crosses from the compile sandbox to the run sandbox through the trusted side: the
// compile step prints it base64-encoded (that is its only stdout), the server decodes
// nothing and passes the text as a file of the run sandbox, where it is decoded into the
// run sandbox's own /tmp and executed. Nothing of one sandbox is shared with another.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { limitsSchema, runtimeSchema, RUNTIMES, type Runtime } from '../../profiles/schema.js';
import { PACKAGE_ROOT } from '../util/package-root.js';
import { FUNCTION_DIR, RUNTIMES as RUNTIME_DEFS, SOURCE_PLACEHOLDER } from './index.js';

export const DEFAULT_CATALOG_DIR = join(PACKAGE_ROOT, 'worker-pool', 'runtime', 'catalog');

/** In a compile or run argv: the compile step's artifact, a file in the sandbox's /tmp. */
export const OUTPUT_PLACEHOLDER = '{output}';
/** Where the artifact is written in the compile sandbox and decoded to in the run sandbox. */
export const ARTIFACT_PATH = '/tmp/program';
/** The artifact's base64 text as a file of the run sandbox. */
export const ARTIFACT_FILE = '.zviz/program.b64';

export const LANGUAGE_NAME_PATTERN = /^[a-z][a-z0-9+.-]{0,31}$/;

const argvSchema = z
  .array(z.string().min(1).max(4096))
  .min(1)
  .max(64)
  .refine((a) => a[0]!.startsWith('/') || a[0] === OUTPUT_PLACEHOLDER, { error: 'argv[0] must be an absolute path or {output}' });

export const languageSchema = z.strictObject({
  name: z.string().regex(LANGUAGE_NAME_PATTERN),
  version: z.string().min(1).max(64),
  /** The host's /usr, or an OCI image by reference (served where the image store is). */
  root: z.union([z.literal('host'), z.strictObject({ image: z.string().min(1).max(512) })]),
  /** File name the code is written to under /fn. */
  source: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/),
  /** Which of the profiles' per-runtime syscall allowlists both steps run under. */
  syscalls: runtimeSchema,
  compile: z
    .strictObject({
      argv: argvSchema,
      /** Defaults of the compile step, lowered to the profile's max and the tenant's caps. */
      limits: limitsSchema,
    })
    .optional(),
  run: z.strictObject({
    argv: argvSchema,
    /** Defaults of the run step (each optional; else the profile's), lowered to the profile's max and the tenant's caps. */
    limits: limitsSchema.partial().optional(),
  }),
});
export type Language = z.infer<typeof languageSchema>;

export class CatalogError extends Error {
  override name = 'CatalogError';
}

/**
 * Every `*.json` of `dir`, validated; throws one line per problem naming the file. The
 * definitions of the built-in runtimes must agree with their records (worker-pool/runtime),
 * which keep running them (warm pools, handler contracts).
 */
export function loadCatalog(dir: string = DEFAULT_CATALOG_DIR): Map<string, Language> {
  const out = new Map<string, Language>();
  const problems: string[] = [];
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch (e) {
    throw new CatalogError(`Cannot read runtime catalog ${dir}: ${(e as Error).message}`);
  }
  for (const f of files) {
    const path = join(dir, f);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      problems.push(`Invalid runtime definition ${path}: not JSON: ${(e as Error).message}`);
      continue;
    }
    const parsed = languageSchema.safeParse(raw);
    if (!parsed.success) {
      for (const i of parsed.error.issues) problems.push(`Invalid runtime definition ${path}: field '${i.path.join('.') || '(top level)'}' ${i.message}`);
      continue;
    }
    const lang = parsed.data;
    if (basename(f, '.json') !== lang.name) problems.push(`Invalid runtime definition ${path}: name '${lang.name}' must equal the file name`);
    const builtin = (RUNTIMES as readonly string[]).includes(lang.name) ? RUNTIME_DEFS[lang.name as Runtime] : null;
    if (builtin !== null) {
      const same = lang.compile === undefined && lang.source === builtin.source && JSON.stringify(lang.run.argv) === JSON.stringify(builtin.run) && lang.syscalls === lang.name;
      if (!same) problems.push(`Invalid runtime definition ${path}: '${lang.name}' is built in: its source, run argv and syscalls must be those of worker-pool/runtime (${builtin.source}, ${JSON.stringify(builtin.run)})`);
    } else if (lang.compile === undefined && lang.run.argv.some((a) => a.includes(OUTPUT_PLACEHOLDER))) {
      problems.push(`Invalid runtime definition ${path}: run.argv uses ${OUTPUT_PLACEHOLDER} but there is no compile step`);
    }
    out.set(lang.name, lang);
  }
  if (problems.length > 0) throw new CatalogError(problems.join('\n'));
  return out;
}

/** Whether this host can run the language: a host root whose programs exist (an image root is the image store's). */
export function availableHere(lang: Language, exists: (path: string) => boolean = existsSync): boolean {
  if (lang.root !== 'host') return false;
  const programs = [...(lang.compile?.argv.slice(0, 1) ?? []), ...lang.run.argv.slice(0, 1)].filter((p) => p.startsWith('/'));
  return programs.every((p) => exists(p));
}

function substitute(argv: readonly string[], lang: Language): string[] {
  return argv.map((a) => a.replaceAll(SOURCE_PLACEHOLDER, `${FUNCTION_DIR}/${lang.source}`).replaceAll(OUTPUT_PLACEHOLDER, ARTIFACT_PATH));
}

/** POSIX shell quoting: the argv stays the definition's, whatever its characters. */
function quote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * The compile step's argv: the definition's compiler, then (only if it succeeded) the
 * artifact base64-encoded on stdout. The compiler's own stdout goes to stderr, so stdout
 * carries nothing but the artifact.
 */
export function compileArgv(lang: Language): string[] {
  if (lang.compile === undefined) throw new Error(`runtime '${lang.name}' has no compile step`);
  const compiler = substitute(lang.compile.argv, lang).map(quote).join(' ');
  return ['/bin/sh', '-c', `${compiler} 1>&2 && exec /usr/bin/base64 -w 0 ${ARTIFACT_PATH}`];
}

/** The run step's argv of a language without a compile step: the definition's, with the request's args. */
export function interpretedRunArgv(lang: Language, args: readonly string[]): string[] {
  return [...substitute(lang.run.argv, lang), ...args];
}

/** The run step's argv after a compile: decode the artifact into /tmp, then exec the run argv with the request's args. */
export function compiledRunArgv(lang: Language, args: readonly string[]): string[] {
  const run = substitute(lang.run.argv, lang).map(quote).join(' ');
  const script = `/usr/bin/base64 -d ${FUNCTION_DIR}/${ARTIFACT_FILE} > ${ARTIFACT_PATH} && /usr/bin/chmod 0500 ${ARTIFACT_PATH} && exec ${run} "$@"`;
  return ['/bin/sh', '-c', script, lang.name, ...args];
}
