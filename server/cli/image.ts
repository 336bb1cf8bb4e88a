// `zviz image pull|import|ls|rm`: this host's image store (worker-pool/images/), used
// directly as root like `zviz run` uses the host: a pull shows a progress bar of the
// layers copied, then the unpack; nothing needs a running server. Its pulls, removals and
// the store's collections are audit records in the server's audit file, as the API's are
// (the Redis streams are the server's to fill).
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../http/errors.js';
import { imageApiError } from '../images/routes.js';
import { silentLogger } from '../ops/log.js';
import { AuditLog, type AuditInput } from '../tenancy/audit.js';
import { errorMessage } from '../../worker-pool/util/errors.js';
import { ImageError, openImageStore, type ImageRecord, type PullProgress } from '../../worker-pool/images/index.js';
import { configOf, requireRoot } from './preflight.js';
import { helpText, parseCommandLine, shown, type OptionSpecs } from './args.js';
import { EXIT } from './exit-codes.js';
import { CliError, Progress, UsageError, writeJson, type Io } from './io.js';

export const IMAGE_OPTIONS = {
  json: { type: 'boolean', help: 'print the image record(s) as JSON on stdout' },
} as const satisfies OptionSpecs;

export const IMAGE_HELP = helpText(
  'zviz image pull REF | import PATH|REF | ls | rm DIGEST|REF  [--json]',
  `Manages this host's image store ($ZVIZ_STATE_DIR/images). pull fetches from a registry
in ZVIZ_IMAGE_REGISTRIES (host/repo:tag or host/repo@sha256:…); import reads an OCI layout
directory, an OCI archive or a 'docker save' tarball (oci:DIR, oci-archive:FILE,
docker-archive:FILE, or a bare path: a directory is an OCI layout, a file an OCI archive).
Each image is stored once per manifest digest, unpacked, sanitized and read-only. Needs root.`,
  IMAGE_OPTIONS,
);

/** `copying 2/5 [=====     ]` — one line a terminal redraws in place. */
export function pullProgressLine(ref: string, p: PullProgress): string {
  if (p.phase === 'resolving') return `resolving ${ref}…`;
  if (p.phase === 'unpacking') return `unpacking ${ref}…`;
  if (p.phase === 'done') return `pulled ${ref}`;
  const width = 20;
  const filled = p.layersTotal === 0 ? 0 : Math.round((p.layersDone / p.layersTotal) * width);
  return `copying ${ref} ${p.layersDone}/${p.layersTotal} layers [${'='.repeat(filled)}${' '.repeat(width - filled)}]`;
}

function importReference(arg: string): string {
  if (/^(oci|oci-archive|docker-archive):/.test(arg)) return arg;
  if (!arg.startsWith('/')) throw new UsageError(`Invalid import source ${shown(arg)}: give an absolute path or oci:/…, oci-archive:/…, docker-archive:/…`);
  let dir: boolean;
  try {
    dir = statSync(arg).isDirectory();
  } catch (e) {
    throw new CliError(`Cannot import ${shown(arg)}: ${errorMessage(e)}`, EXIT.NOT_FOUND, 'IMAGE_NOT_FOUND');
  }
  return dir ? `oci:${arg}` : `oci-archive:${arg}`;
}

function line(r: ImageRecord): string {
  const mb = (r.sizeBytes / (1024 * 1024)).toFixed(1);
  return `${r.digest}  ${mb.padStart(8)} MiB  ${r.layers} layer${r.layers === 1 ? '' : 's'}  ${r.references.join(', ')}`;
}

function imageFailure(e: unknown): never {
  if (e instanceof ImageError) {
    const code = e.code === 'INVALID_REFERENCE' ? EXIT.USAGE : e.code === 'IMAGE_NOT_FOUND' ? EXIT.NOT_FOUND : EXIT.FAILURE;
    throw new CliError(e.message, code, e.code);
  }
  throw e;
}

export async function imageCommand(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandLine('image', args, IMAGE_OPTIONS);
  if (parsed.help) {
    io.stdout.write(IMAGE_HELP);
    return EXIT.OK;
  }
  const [verb, ...operands] = [...parsed.positionals, ...(parsed.rest ?? [])];
  const wantOperands = verb === 'ls' ? 0 : 1;
  if (verb === undefined || !['pull', 'import', 'ls', 'rm'].includes(verb)) {
    throw new UsageError(`Invalid image command ${shown(verb ?? '')}: expected pull, import, ls or rm`);
  }
  if (operands.length !== wantOperands) throw new UsageError(`zviz image ${verb} takes ${wantOperands === 0 ? 'no argument' : 'one argument'}`);
  const config = configOf(io);
  requireRoot('image', 'use the image store', "the store is root's");
  const store = openImageStore(config.stateDir, config.images);
  const json = parsed.values.json === true;
  const audit = new AuditLog({ store: FILE_ONLY, file: join(config.stateDir, 'audit.log'), log: silentLogger });
  type ImageAudit = Extract<AuditInput, { type: 'image' }>;
  const record = (r: Pick<ImageAudit, 'action' | 'reference' | 'digest' | 'outcome'> & { code?: string }) =>
    audit.record({ type: 'image', tenant: null, remote: null, ...r, code: r.code ?? null });
  store.onEvict((r) => void record({ action: 'image.evict', reference: null, digest: r.digest, outcome: 'removed' }));
  try {
    if (verb === 'ls') {
      const all = store.list();
      if (json) writeJson(io.stdout, all);
      else io.stdout.write(all.length === 0 ? 'no images\n' : `${all.map(line).join('\n')}\n`);
      return EXIT.OK;
    }
    const operand = operands[0]!;
    if (verb === 'rm') {
      const image = store.resolve(operand);
      store.remove(image.digest);
      await record({ action: 'image.remove', reference: null, digest: image.digest, outcome: 'removed' });
      if (json) writeJson(io.stdout, { removed: image.digest });
      else io.stdout.write(`removed ${image.digest}\n`);
      return EXIT.OK;
    }
    const ref = verb === 'import' ? importReference(operand) : operand;
    if (verb === 'pull' && /^(oci|oci-archive|docker-archive):/.test(ref)) throw new UsageError(`Invalid pull reference ${shown(ref)}: use zviz image import for local images`);
    const progress = new Progress(io.stderr);
    let image: ImageRecord;
    let digest: string | null = null;
    try {
      const started = await store.begin(ref, (p) => progress.show(pullProgressLine(ref, p)));
      digest = started.digest;
      image = await started.finished;
      await record({ action: 'image.pull', reference: ref, digest, outcome: started.stored ? 'already stored' : 'stored' });
    } catch (e) {
      const err = imageApiError(e);
      await record({ action: 'image.pull', reference: ref, digest, outcome: 'failed', code: err instanceof ApiError ? err.code : 'INTERNAL' });
      throw e;
    } finally {
      progress.clear();
    }
    if (json) writeJson(io.stdout, image);
    else io.stdout.write(`${image.digest}\n`);
    return EXIT.OK;
  } catch (e) {
    imageFailure(e);
  } finally {
    await audit.close();
  }
}

/** The command line writes the audit file only: nothing is stored elsewhere. */
const FILE_ONLY = { append: () => Promise.resolve(''), list: () => Promise.resolve({ records: [], nextCursor: null }) };
