// The example functions of `functions/<name>/` (a manifest.json and the code files beside
// it), deployed for tenant `dev` at start-up so the README's examples work on a fresh
// server. Idempotent: an example whose code and settings are unchanged gets no new version.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { z } from 'zod';
import { limitsSchema, runtimeSchema } from '../../profiles/schema.js';
import { deployFunction, type FunctionRouteDeps } from './routes.js';
import type { DeployFunctionRequest } from './deploy.js';
import type { Logger } from '../ops/log.js';
import { envSchema, functionNameSchema, profileNameSchema } from '../invocation/schemas.js';
import type { Tenant } from '../tenancy/tenants.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const MANIFEST = 'manifest.json';

export const manifestSchema = z.strictObject({
  name: functionNameSchema,
  runtime: runtimeSchema,
  handler: z.string().min(1),
  description: z.string().max(500).optional(),
  profile: profileNameSchema.optional(),
  limits: limitsSchema.partial().optional(),
  env: envSchema.optional(),
});

export interface Example {
  name: string;
  deploy: DeployFunctionRequest;
}

function filesUnder(dir: string, root = dir, depth = 0): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name);
    if (entry.isDirectory() && depth < 7) Object.assign(out, filesUnder(path, root, depth + 1));
    else if (entry.isFile() && !(dir === root && entry.name === MANIFEST)) out[relative(root, path).split(sep).join('/')] = readFileSync(path, 'utf8');
  }
  return out;
}

/** Every `<dir>/<name>/manifest.json` with its files; throws naming the manifest that is wrong. */
export function loadExamples(dir: string): Example[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => statSync(join(dir, n)).isDirectory());
  } catch {
    return []; // no functions/ folder: no examples to deploy
  }
  const out: Example[] = [];
  for (const n of names.sort()) {
    const file = join(dir, n, MANIFEST);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new Error(`Cannot read example ${file}: ${errorMessage(e)}`);
    }
    const m = manifestSchema.safeParse(raw);
    if (!m.success) throw new Error(`Cannot read example ${file}: ${m.error.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('; ')}`);
    const { name, description: _description, ...rest } = m.data;
    out.push({ name, deploy: { ...rest, files: filesUnder(join(dir, n)) } });
  }
  return out;
}

/** Deploys each example not yet deployed as it is; failures are logged, not fatal. */
export async function deployExamples(
  deps: Pick<FunctionRouteDeps, 'functions' | 'profiles' | 'withState'>,
  tenant: Tenant,
  examples: readonly Example[],
  log: Logger,
): Promise<void> {
  const deployed: string[] = [];
  for (const ex of examples) {
    try {
      const { created, meta } = await deployFunction(deps, tenant, ex.name, ex.deploy, true);
      if (created) deployed.push(`${ex.name}@${meta.version}`);
    } catch (e) {
      log.warn('cannot deploy example function', { tenant: tenant.name, function: ex.name, error: errorMessage(e) });
    }
  }
  if (deployed.length > 0) log.info('deployed example functions', { tenant: tenant.name, functions: deployed });
}
