// The three ways a task is made, and the one profile section they share.
import { describe, expect, it } from 'vitest';
import { allowlistFor, loadProfiles, type Profile } from '../profiles/index.js';
import { PACKAGE_ROOT } from './util/package-root.js';
import { commandTask, handlerTask, inlineTask, sandboxProfile } from './task.js';
import { encodeSpec, TAG } from './spec.js';

/** The TLV records of a spec: u16 tag, u16 zero, u32 length, payload. */
function decode(spec: Buffer): Array<{ tag: number; payload: Buffer }> {
  const out: Array<{ tag: number; payload: Buffer }> = [];
  for (let at = 0; at < spec.length; ) {
    const len = spec.readUInt32LE(at + 4);
    out.push({ tag: spec.readUInt16LE(at), payload: spec.subarray(at + 8, at + 8 + len) });
    at += 8 + len;
  }
  return out;
}

const shipped = loadProfiles(`${PACKAGE_ROOT}/profiles`);
const base = shipped.get('default')!;
const withAppArmor: Profile = { ...base, name: 'confined', apparmorProfile: 'zviz-fn' };
const limits = base.limits.defaults;

describe('sandboxProfile', () => {
  it("carries the profile's sections, the runtime's allowlist, and AppArmor only when the profile names it", () => {
    const p = sandboxProfile(base, 'python');
    expect(p).toEqual({
      name: 'default',
      filesystem: base.filesystem,
      landlock: base.landlock,
      rlimits: base.rlimits,
      seccompAllow: allowlistFor(base, 'python'),
      socketFamilies: [1, 2, 10], // AF_UNIX, AF_INET, AF_INET6: the default when a profile does not say
      brokeredFiles: base.seccomp.brokeredFiles,
      network: base.network,
    });
    expect(sandboxProfile(withAppArmor, 'python').apparmorProfile).toBe('zviz-fn');
  });

  it('takes the union of several runtimes, extra brokered files after the profile\'s, and a network override', () => {
    const secret = { path: '/run/secrets/db', source: '/var/lib/zviz/secrets/t/db' };
    const p = sandboxProfile(base, ['node', 'bash'], { extraBrokeredFiles: [secret], network: { mode: 'none' } });
    expect(new Set(p.seccompAllow)).toEqual(new Set([...allowlistFor(base, 'node'), ...allowlistFor(base, 'bash')]));
    expect(p.brokeredFiles).toEqual([...base.seccomp.brokeredFiles, secret]);
    expect(p.network).toEqual({ mode: 'none' });
  });
});

describe('task builders', () => {
  it('inlineTask: the source file and run argv cold; the bootstrap and the work as control warm', () => {
    const t = inlineTask({ id: 'i', runtime: 'node', code: 'x', args: ['a'], env: { K: 'v' }, stdin: 'in', limits, profile: base });
    expect(t).toMatchObject({ id: 'i', runtime: 'node', argv: ['/usr/bin/node', '/fn/main.js', 'a'], stdin: 'in', limits });
    expect(t.env).toMatchObject({ K: 'v', PATH: '/usr/local/bin:/usr/bin:/bin' });
    expect(t.files).toEqual([{ name: 'main.js', content: 'x' }]);
    expect(t.warm).toMatchObject({ key: 'inline:node:default', control: '{"code":"x","args":["a"],"env":{"K":"v"}}', handler: false });
    // Nothing of the request is in a sandbox made before it.
    expect(t.warm!.template.env).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' });
    expect(t.warm!.template.files.map((f) => f.name)).toEqual(['.zviz/bootstrap-node.js']);
    expect(t.profile).toEqual(sandboxProfile(base, 'node'));
  });

  it("handlerTask: cold is the warm template; the function's secrets are brokered", () => {
    const fn = { tenant: 't', name: 'f', version: 3, runtime: 'bash' as const, files: { 'main.sh': 'cat' }, handler: 'main.sh', env: { A: '1' } };
    const secrets = [{ path: '/run/secrets/k', source: '/s/t/k' }];
    const t = handlerTask({ id: 'h', fn, event: { n: 1 }, context: { version: 3 }, limits, profile: withAppArmor, secrets });
    expect(t.warm!.key).toBe('fn:t:f:3:confined');
    expect([t.argv, t.env, t.files]).toEqual([t.warm!.template.argv, t.warm!.template.env, t.warm!.template.files]);
    expect(t.argv).toEqual(['/usr/bin/bash', '/fn/.zviz/bootstrap-bash.sh', 'handler', '/fn/main.sh']);
    // bash's contract: the event on stdin, no control message.
    expect([t.stdin, t.warm!.control]).toEqual(['{"n":1}', '']);
    expect(t.profile.brokeredFiles).toEqual(secrets);
    expect(t.profile.apparmorProfile).toBe('zviz-fn');
  });

  it("handlerTask of a bundle: no files, the tree is bound on /fn (first BIND record, before the profile's)", () => {
    const fn = { tenant: 't', name: 'b', version: 1, runtime: 'node' as const, files: {}, handler: 'main.js', env: {}, fnDir: '/var/cache/zviz/bundles/abc' };
    const t = handlerTask({ id: 'h', fn, event: {}, context: {}, limits, profile: base });
    expect(t.files).toEqual([]);
    expect(t.warm!.template.files).toEqual([]);
    expect(t.fnDir).toBe('/var/cache/zviz/bundles/abc');
    expect(t.argv).toEqual(['/usr/bin/node', '/fn/.zviz/bootstrap-node.js', 'handler', '/fn/main.js']);
    const spec = encodeSpec(t, 'x', { rootBase: '/run/zviz/root', uidBase: 1_000_000_000 } as never);
    const binds = decode(spec).filter((r) => r.tag === TAG.BIND);
    expect(binds.length).toBe(1 + base.filesystem.readOnlyBinds.length);
    expect(binds[0]!.payload.includes(Buffer.from('/var/cache/zviz/bundles/abc'))).toBe(true);
    expect(binds[0]!.payload.subarray(-3).toString()).toBe('/fn');
  });

  it('commandTask: the argv as given, no files, no warm spec, the first runtime named', () => {
    const t = commandTask({ id: 'c', argv: ['/usr/bin/id', '-u'], limits, profile: base, runtimes: ['python', 'bash'] });
    expect(t).toMatchObject({ id: 'c', runtime: 'python', argv: ['/usr/bin/id', '-u'], files: [], stdin: '' });
    expect(t.warm).toBeUndefined();
    expect(t.env).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' });
    expect(t.profile).toEqual(sandboxProfile(base, ['python', 'bash']));
  });
});
