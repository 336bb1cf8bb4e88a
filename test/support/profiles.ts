// Test-only profiles: a temporary profiles directory holding copies of the shipped profiles
// (default, minimal and their seccomp policy) plus profiles derived from default.json, for
// a server started with ZVIZ_PROFILES_DIR pointing at it.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';

/** Edits a parsed copy of profiles/default.json in place (name is set already). */
export type ProfileEdit = (raw: any) => void;

export interface ProfilesDir {
  dir: string;
  remove: () => void;
}

export function makeProfilesDir(extra: Record<string, ProfileEdit>): ProfilesDir {
  const dir = mkdtempSync(join(tmpdir(), 'zviz-profiles-'));
  const shipped = join(PACKAGE_ROOT, 'profiles');
  for (const f of ['default.json', 'minimal.json', 'seccomp']) cpSync(join(shipped, f), join(dir, f), { recursive: true });
  const base = readFileSync(join(shipped, 'default.json'), 'utf8');
  for (const [name, edit] of Object.entries(extra)) {
    const raw = JSON.parse(base);
    raw.name = name;
    raw.description = `test-only profile (${name})`;
    edit(raw);
    writeFileSync(join(dir, `${name}.json`), JSON.stringify(raw, null, 2));
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
