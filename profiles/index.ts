// Loads and validates every profile in a directory. An invalid profile is a start-up error
// that names the file, the field and the offending value.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { z } from 'zod';
import { profileSchema, withPolicyReader, type Profile, type Runtime } from './schema.js';
import { errorMessage } from '../worker-pool/util/errors.js';

export * from './schema.js';
export * from './socket-families.js';

export class ProfileError extends Error {
  override name = 'ProfileError';
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

function describeIssue(file: string, raw: unknown, issue: z.core.$ZodIssue): string {
  // An unknown key is named as the field itself, with its own value.
  const keys = issue.code === 'unrecognized_keys' ? issue.keys : [null];
  return keys
    .map((key) => {
      const path = key === null ? issue.path : [...issue.path, key];
      const field = path.length > 0 ? path.join('.') : '(top level)';
      const value = valueAt(raw, path);
      const shown = value === undefined ? 'missing' : JSON.stringify(value);
      const message = key === null ? issue.message : 'is not a known field';
      return `Invalid profile ${file}: field '${field}' ${message}: current value is ${shown}`;
    })
    .join('\n');
}

export function parseProfile(file: string, text: string): Profile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ProfileError(`Invalid profile ${file}: not valid JSON: ${errorMessage(e)}`);
  }
  const readPolicy = (name: string): unknown => {
    const path = join(dirname(file), name);
    try {
      return JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      return new Error(`${path}: ${errorMessage(e)}`);
    }
  };
  const parsed = withPolicyReader(readPolicy, () => profileSchema.safeParse(raw));
  if (!parsed.success) {
    throw new ProfileError(parsed.error.issues.map((i) => describeIssue(file, raw, i)).join('\n'));
  }
  const expected = file.replace(/^.*\//, '').replace(/\.json$/, '');
  if (parsed.data.name !== expected) {
    throw new ProfileError(
      `Invalid profile ${file}: field 'name' must match the file name '${expected}': current value is ${JSON.stringify(parsed.data.name)}`,
    );
  }
  return parsed.data;
}

/** Reads `<dir>/*.json`. Throws ProfileError on the first invalid file, or if none exist. */
export function loadProfiles(dir: string): Map<string, Profile> {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json')).sort();
  } catch (e) {
    throw new ProfileError(`Cannot read profiles directory ${dir}: ${errorMessage(e)}`);
  }
  if (names.length === 0) throw new ProfileError(`No profiles found in ${dir}: expected at least one *.json`);
  const out = new Map<string, Profile>();
  for (const n of names) {
    const file = join(dir, n);
    const p = parseProfile(file, readFileSync(file, 'utf8'));
    out.set(p.name, p);
  }
  return out;
}

/**
 * The syscalls a sandbox may make under a profile: the policy's common list plus the list
 * of each runtime it may run (one for code in a runtime; several for an arbitrary command).
 */
export function allowlistFor(profile: Profile, runtimes: Runtime | readonly Runtime[]): string[] {
  const p = profile.seccomp.policy;
  const lists = typeof runtimes === 'string' ? [runtimes] : runtimes;
  return [...new Set([...p.common, ...lists.flatMap((r) => p.runtimes[r])])];
}

/** The allowlist of a program from an OCI image under a profile (`common` + `image`); null when the profile runs no images. */
export function imageAllowlistFor(profile: Profile): string[] | null {
  const p = profile.seccomp.policy;
  return p.image ? [...new Set([...p.common, ...p.image])] : null;
}
