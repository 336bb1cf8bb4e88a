// The profile contract: the shipped profiles load, and every kind of invalid profile is
// refused with a message that names the file, the field and the offending value. The bad
// profiles are the shipped default.json with one thing changed, so the tests follow the
// schema as it grows.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadProfiles, parseProfile, ProfileError } from './index.js';

const DIR = fileURLToPath(new URL('.', import.meta.url));
const DEFAULT_FILE = join(DIR, 'default.json');
const DEFAULT_TEXT = readFileSync(DEFAULT_FILE, 'utf8');

type Json = Record<string, unknown>;

/** default.json, changed by `edit`, parsed as if it were `file` in the profiles directory. */
function parseEdited(edit: (p: Json) => void, file = DEFAULT_FILE) {
  const raw = JSON.parse(DEFAULT_TEXT) as Json;
  edit(raw);
  return () => parseProfile(file, JSON.stringify(raw, null, 2));
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ProfileError);
    return (e as Error).message;
  }
  throw new Error('expected a ProfileError, nothing was thrown');
}

const at = (p: Json, ...keys: string[]): Json => keys.reduce((o, k) => o[k] as Json, p);

describe('shipped profiles', () => {
  const shipped = readdirSync(DIR).filter((n) => n.endsWith('.json')).sort();

  it('load with loadProfiles, keyed by their file names', () => {
    const profiles = loadProfiles(DIR);
    expect([...profiles.keys()].sort()).toEqual(shipped.map((n) => n.replace(/\.json$/, '')));
    expect(profiles.has('default')).toBe(true);
  });

  it.each(shipped)('%s keeps every default within its max', (name) => {
    const p = parseProfile(join(DIR, name), readFileSync(join(DIR, name), 'utf8'));
    for (const k of Object.keys(p.limits.defaults) as Array<keyof typeof p.limits.defaults>) {
      expect(p.limits.defaults[k], k).toBeLessThanOrEqual(p.limits.max[k]);
    }
  });

  it('allow AF_UNIX, AF_INET and AF_INET6 sockets, and no other family (no AF_VSOCK, no AF_NETLINK)', () => {
    for (const p of loadProfiles(DIR).values()) expect(p.seccomp.socketFamilies).toEqual(['AF_UNIX', 'AF_INET', 'AF_INET6']);
  });

  it('a profile that does not name socket families gets AF_UNIX, AF_INET and AF_INET6', () => {
    const p = parseEdited((raw) => delete at(raw, 'seccomp').socketFamilies)();
    expect(p.seccomp.socketFamilies).toEqual(['AF_UNIX', 'AF_INET', 'AF_INET6']);
    const none = parseEdited((raw) => (at(raw, 'seccomp').socketFamilies = []))();
    expect(none.seccomp.socketFamilies).toEqual([]);
  });

  it('resolve the seccomp policy file named relative to the profile', () => {
    const p = loadProfiles(DIR).get('default')!;
    expect(Array.isArray(p.seccomp.policy.common)).toBe(true);
    expect(p.seccomp.policy.common.length).toBeGreaterThan(0);
  });
});

describe('parseProfile refuses invalid profiles, naming file, field and value', () => {
  it('an unknown top-level field', () => {
    const msg = messageOf(parseEdited((p) => (p.bogusSetting = 12345)));
    expect(msg).toContain(DEFAULT_FILE);
    expect(msg).toContain('bogusSetting');
    expect(msg).toContain('12345');
  });

  it('an unknown nested field', () => {
    const msg = messageOf(parseEdited((p) => (at(p, 'limits', 'defaults').gpus = 2)));
    expect(msg).toContain(DEFAULT_FILE);
    expect(msg).toContain("field 'limits.defaults.gpus'");
    expect(msg).toContain('gpus');
  });

  // describeIssue reports zod's unrecognized_keys issue at the object's path, so today the
  // field reads '(top level)' (or 'limits.defaults') and the "current value" is the whole
  // enclosing object: for a top-level key, the entire profile.
  it.each([
    ['bogusSetting', (p: Json) => (p.bogusSetting = 12345)],
    ['limits.defaults.gpus', (p: Json) => (at(p, 'limits', 'defaults').gpus = 12345)],
  ])('an unknown field is reported as that field (%s) with its own value', (field, edit) => {
    const msg = messageOf(parseEdited(edit));
    expect(msg).toContain(`field '${field}'`);
    expect(msg).toMatch(/current value is 12345$/);
  });

  it('a default above its max', () => {
    const msg = messageOf(parseEdited((p) => (at(p, 'limits', 'defaults').memoryMb = 4096)));
    expect(msg).toContain(`Invalid profile ${DEFAULT_FILE}: field 'limits.defaults.memoryMb'`);
    expect(msg).toContain('must be at most limits.max.memoryMb');
    expect(msg).toMatch(/current value is 4096$/);
  });

  it('a name that does not match the file name', () => {
    const other = join(DIR, 'other.json');
    const msg = messageOf(parseEdited(() => {}, other));
    expect(msg).toBe(
      `Invalid profile ${other}: field 'name' must match the file name 'other': current value is "default"`,
    );
  });

  it('a runtime outside the enum', () => {
    const msg = messageOf(parseEdited((p) => (p.runtimes = ['node', 'ruby'])));
    expect(msg).toContain(`Invalid profile ${DEFAULT_FILE}: field 'runtimes.1'`);
    expect(msg).toContain('current value is "ruby"');
  });

  it('a negative tmpSizeMb', () => {
    const msg = messageOf(parseEdited((p) => (at(p, 'filesystem').tmpSizeMb = -1)));
    expect(msg).toContain(`Invalid profile ${DEFAULT_FILE}: field 'filesystem.tmpSizeMb'`);
    expect(msg).toMatch(/current value is -1$/);
  });

  it('a missing field, shown as missing', () => {
    const msg = messageOf(parseEdited((p) => delete p.rlimits));
    expect(msg).toContain("field 'rlimits'");
    expect(msg).toContain('current value is missing');
  });

  it('a bind target with a .. component', () => {
    const msg = messageOf(
      parseEdited((p) => (at(p, 'filesystem').readOnlyBinds = [{ source: '/etc', target: '/x/../etc' }])),
    );
    expect(msg).toContain("field 'filesystem.readOnlyBinds.0.target'");
    expect(msg).toContain('"/x/../etc"');
  });

  it('every issue, one line each', () => {
    const msg = messageOf(
      parseEdited((p) => {
        at(p, 'filesystem').tmpSizeMb = -1;
        p.runtimes = ['cobol'];
      }),
    );
    const lines = msg.split('\n');
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l.startsWith(`Invalid profile ${DEFAULT_FILE}: field '`)).toBe(true);
  });

  it('text that is not JSON', () => {
    const msg = messageOf(() => parseProfile(DEFAULT_FILE, '{ "name": "default", '));
    expect(msg).toMatch(new RegExp(`^Invalid profile ${DEFAULT_FILE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not valid JSON: `));
  });

  it('a socket family that is not an AF_* name, and one named twice', () => {
    let msg = messageOf(parseEdited((p) => (at(p, 'seccomp').socketFamilies = ['AF_UNIX', 'AF_VSOCKET'])));
    expect(msg).toContain(`Invalid profile ${DEFAULT_FILE}: field 'seccomp.socketFamilies.1'`);
    expect(msg).toContain('current value is "AF_VSOCKET"');
    msg = messageOf(parseEdited((p) => (at(p, 'seccomp').socketFamilies = [40])));
    expect(msg).toContain("field 'seccomp.socketFamilies.0'");
    msg = messageOf(parseEdited((p) => (at(p, 'seccomp').socketFamilies = ['AF_INET', 'AF_INET'])));
    expect(msg).toContain("field 'seccomp.socketFamilies'");
    expect(msg).toContain('must not name a family twice');
  });

  it('a seccomp policy name that climbs out of the profiles directory', () => {
    const msg = messageOf(parseEdited((p) => (at(p, 'seccomp').policy = '../etc/policy.json')));
    expect(msg).toContain("field 'seccomp.policy");
    expect(msg).toContain('../etc/policy.json');
  });

  // The reader's reason ({ unreadablePolicy: "<path>: ENOENT: ..." }) is dropped: the
  // message shows the raw string from the profile and two follow-on issues about
  // seccomp.policy.common / .runtimes being undefined.
  it('a seccomp policy file that cannot be read, saying why', () => {
    const msg = messageOf(parseEdited((p) => (at(p, 'seccomp').policy = 'seccomp/no-such-policy.json')));
    expect(msg).toContain(`Invalid profile ${DEFAULT_FILE}: field 'seccomp.policy'`);
    expect(msg).toContain('no-such-policy.json');
    expect(msg).toMatch(/ENOENT|no such file/i);
  });
});

describe('loadProfiles', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'zviz-profiles-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('refuses a directory without profiles', () => {
    expect(() => loadProfiles(tmp)).toThrow(`No profiles found in ${tmp}`);
  });

  it('refuses a directory that cannot be read, naming it', () => {
    const missing = join(tmp, 'nope');
    expect(() => loadProfiles(missing)).toThrow(`Cannot read profiles directory ${missing}`);
  });

  it('refuses the whole set when one file is invalid, naming that file', () => {
    const raw = JSON.parse(DEFAULT_TEXT) as Json;
    raw.name = 'broken';
    at(raw, 'limits', 'max').pids = 0;
    // Inline policy: a copied profile has no seccomp/ directory beside it.
    const policyFile = join(DIR, 'seccomp', 'default.json');
    at(raw, 'seccomp').policy = JSON.parse(readFileSync(policyFile, 'utf8')) as unknown;
    writeFileSync(join(tmp, 'broken.json'), JSON.stringify(raw));
    const msg = messageOf(() => loadProfiles(tmp));
    expect(msg).toContain(join(tmp, 'broken.json'));
    expect(msg).toContain("field 'limits.max.pids'");
  });
});
