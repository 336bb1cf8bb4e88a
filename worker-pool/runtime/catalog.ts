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
import { parseReference, ReferenceError, registryAllowed } from '../images/reference.js';
import type { ImageStore } from '../images/store.js';
import { existsInImage } from '../images/tree.js';
import { FUNCTION_DIR, RUNTIMES as RUNTIME_DEFS, SOURCE_PLACEHOLDER } from './index.js';

export const DEFAULT_CATALOG_DIR = join(PACKAGE_ROOT, 'worker-pool', 'runtime', 'catalog');

/** In a compile or run argv: the compile step's artifact, a file in the sandbox's /tmp. */
export const OUTPUT_PLACEHOLDER = '{output}';
/** Where the artifact is written in the compile sandbox and decoded to in the run sandbox. */
export const ARTIFACT_PATH = '/tmp/program';
/** The artifact's base64 text as a file of the run sandbox. */
export const ARTIFACT_FILE = '.zviz/program.b64';

/**
 * What the compile and run wrappers below exec besides the definition's own programs: an
 * image-rooted compiled language's image must have them (Debian, Ubuntu and other
 * merged-/usr images do; availability says which is missing otherwise).
 */
const WRAPPER_PROGRAMS = ['/bin/sh', '/usr/bin/base64', '/usr/bin/chmod'];

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
  /**
   * Which of the profiles' syscall allowlists both steps run under: a runtime's for a host
   * root; `image` (the profile's general-purpose list for image programs) for an image root.
   */
  syscalls: z.union([runtimeSchema, z.literal('image')]),
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
    if ((lang.root === 'host') === (lang.syscalls === 'image')) {
      problems.push(`Invalid runtime definition ${path}: field 'syscalls' must be 'image' exactly when the root is an image (a host root names a runtime's allowlist)`);
    }
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

/** The programs a language's steps exec by absolute path, with the shell and tools the step wrappers below use. */
export function programsOf(lang: Language): string[] {
  const own = [...(lang.compile?.argv.slice(0, 1) ?? []), ...lang.run.argv.slice(0, 1)].filter((p) => p.startsWith('/'));
  const wrappers = lang.compile === undefined ? [] : WRAPPER_PROGRAMS;
  return [...new Set([...own, ...wrappers])];
}

/** Whether this host can run a host-rooted language: its programs exist on the host (an image root: see imageRootState). */
export function availableHere(lang: Language, exists: (path: string) => boolean = existsSync): boolean {
  if (lang.root !== 'host') return false;
  return programsOf(lang).every((p) => exists(p));
}

/**
 * Where an image-rooted language stands on this host: `ready` (its image is in the store
 * and has every program its steps run), `pullable` (not stored, but its reference is one
 * the store may fetch: an allowlisted registry, or a local layout or archive the operator
 * named in the catalog; the first use pulls it) or `unavailable`, with the reason.
 */
export type ImageRootState =
  | { status: 'ready'; digest: string }
  | { status: 'pullable' }
  | { status: 'unavailable'; reason: string; code: 'IMAGE_NOT_FOUND' | 'IMAGE_INVALID' | 'REGISTRY_NOT_ALLOWED' | 'INVALID_IMAGE_REFERENCE' };

export function imageRootState(lang: Language, images: Pick<ImageStore, 'find' | 'rootfs' | 'options'> | null): ImageRootState {
  if (lang.root === 'host') throw new Error(`runtime '${lang.name}' is rooted on the host`);
  const ref = lang.root.image;
  if (images === null) return { status: 'unavailable', code: 'IMAGE_NOT_FOUND', reason: `its image ${ref} cannot be used: this server has no image store` };
  const record = images.find(ref);
  if (record !== null) {
    const missing = programsOf(lang).filter((p) => !existsInImage(images.rootfs(record.digest), p));
    if (missing.length > 0) return { status: 'unavailable', code: 'IMAGE_INVALID', reason: `its image ${ref} (${record.digest}) lacks ${missing.join(', ')}` };
    return { status: 'ready', digest: record.digest };
  }
  let source;
  try {
    source = parseReference(ref);
  } catch (e) {
    if (e instanceof ReferenceError) return { status: 'unavailable', code: 'INVALID_IMAGE_REFERENCE', reason: `its image reference is invalid: ${e.message}` };
    throw e;
  }
  if (!registryAllowed(source, images.options.registries)) {
    return {
      status: 'unavailable',
      code: 'REGISTRY_NOT_ALLOWED',
      reason: `its image ${ref} is not in this host's image store and cannot be pulled: registry ${source.transport === 'docker' ? source.registry : ''} is not in ZVIZ_IMAGE_REGISTRIES (an operator pulls or imports it with POST /admin/images)`,
    };
  }
  return { status: 'pullable' };
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
