// `zviz run` without privileges: everything decided before a sandbox is made.
import { describe, expect, it } from 'vitest';
import { loadProfiles } from '../../profiles/index.js';
import { loadConfig } from '../config.js';
import { allowlistFor } from '../../profiles/index.js';
import { cli } from './cli.js';
import { CliError, UsageError } from './io.js';
import { planRun, resolveCommand, runTask, unstreamedTail } from './run.js';
import { recordedIo } from './test-io.js';

const profiles = loadProfiles(loadConfig({}).profilesDir);
const onHost = new Set(['/usr/bin/id', '/usr/bin/cat', '/bin/sh']);
const exists = (p: string) => onHost.has(p);
const plan = (...args: string[]) => planRun(args, profiles, exists);

function refused(fn: () => unknown): CliError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    return e as CliError;
  }
  throw new Error('expected a CliError');
}

describe('zviz run: the plan', () => {
  it('takes the profile defaults when no limit flag is given', () => {
    const p = plan('--', '/usr/bin/id', '-u')!;
    expect(p.argv).toEqual(['/usr/bin/id', '-u']);
    expect(p.profile.name).toBe('default');
    expect(p.limits).toEqual(profiles.get('default')!.limits.defaults);
    expect(p).toMatchObject({ readStdin: true, json: false, env: {} });
  });

  it('sets each limit from its flag, within the profile max', () => {
    const p = plan('--profile', 'minimal', '--memory', '200M', '--timeout', '3s', '--pids', '20', '--cpus', '0.5', '--output', '64K', '--', 'id')!;
    expect(p.limits).toEqual({ memoryMb: 200, timeoutMs: 3000, pids: 20, cpus: 0.5, outputBytes: 65536 });
  });

  it.each([
    [['--memory', '999999'], "Invalid --memory: must be at most 1024 MiB for profile 'default': current value is \"999999\""],
    [['--timeout', '2m'], "Invalid --timeout: must be at most 60000 ms for profile 'default': current value is \"2m\""],
    [['--pids', '257'], "Invalid --pids: must be at most 256 for profile 'default'"],
    [['--cpus', '4'], "Invalid --cpus: must be at most 2 for profile 'default'"],
    [['--profile', 'minimal', '--memory', '512'], "Invalid --memory: must be at most 256 MiB for profile 'minimal'"],
    [['--memory', '8'], 'Invalid --memory: must be at least 16 MiB: current value is "8"'],
    [['--pids', '0'], 'Invalid --pids: must be at least 1'],
  ])('limits outside the profile are refused with exit 2, naming the flag and the bound: %j', (flags, message) => {
    const e = refused(() => plan(...flags, '--', 'id'));
    expect(e).toBeInstanceOf(UsageError);
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain(message);
  });

  it.each([
    [['/usr/bin/id'], "Missing '--' before the command"],
    [[], "Missing '--' before the command"],
    [['--'], "Missing command after '--'"],
    [['id', '--', 'id'], 'Unexpected argument "id" before \'--\''],
    [['--bogus', '--', 'id'], "Unknown option --bogus for 'zviz run'"],
    [['--profile', 'nope', '--', 'id'], 'Invalid --profile: no profile is named "nope": known profiles are ci, default, minimal'],
    [['--runtime', 'ruby', '--', 'id'], "Invalid --runtime: profile 'default' allows node, python, bash: current value is \"ruby\""],
    [['--env', 'NO SPACE=1', '--', 'id'], 'Invalid --env: must be KEY=VALUE'],
    [['--', './relative'], 'Invalid command "./relative": must be an absolute path or a name found in /usr/local/bin:/usr/bin:/bin'],
  ])('bad usage exits 2: %j', (args, message) => {
    const e = refused(() => plan(...args));
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain(message);
  });

  it('a command name is looked up in the sandbox PATH; one not found there exits 127', () => {
    expect(resolveCommand('id', exists)).toBe('/usr/bin/id');
    expect(resolveCommand('sh', exists)).toBe('/bin/sh');
    expect(resolveCommand('/opt/tool', exists)).toBe('/opt/tool');
    const e = refused(() => resolveCommand('no-such-tool', exists));
    expect(e.exitCode).toBe(127);
    expect(e.message).toContain('Cannot find command "no-such-tool" in /usr/local/bin:/usr/bin:/bin');
  });

  it("the seccomp allowlist is the union of the profile's runtimes, or one runtime's with --runtime", () => {
    const def = profiles.get('default')!;
    const allowed = (...args: string[]) => runTask(plan(...args)!, 'x', '').profile.seccompAllow;
    const all = allowed('--', 'id');
    for (const r of def.runtimes) for (const s of allowlistFor(def, r)) expect(all).toContain(s);
    expect(new Set(allowed('--runtime', 'bash', '--', 'id'))).toEqual(new Set(allowlistFor(def, 'bash')));
  });

  it('the task is the command as argv: no /fn files, no warm spec, env over the base', () => {
    const p = plan('-e', 'GREETING=hi', '--no-stdin', '--json', '--', 'cat', '-')!;
    expect(p).toMatchObject({ readStdin: false, json: true });
    const t = runTask(p, 'abc', 'input');
    expect(t).toMatchObject({ id: 'abc', argv: ['/usr/bin/cat', '-'], files: [], stdin: 'input', limits: p.limits });
    expect(t.warm).toBeUndefined();
    expect(t.env).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8', GREETING: 'hi' });
    expect(t.profile).toMatchObject({ name: 'default', network: { mode: 'none' }, seccompAllow: allowlistFor(p.profile, p.runtimes) });
  });
});

describe('zviz run: output the sandbox reports after the fact', () => {
  it('writes only what continues the streamed output', () => {
    const s = (t: string) => Buffer.from(t);
    expect(unstreamedTail([], 'execve `/x`: No such file or directory\n').toString()).toBe('execve `/x`: No such file or directory\n');
    expect(unstreamedTail([s('ab'), s('c')], 'abc').length).toBe(0);
    expect(unstreamedTail([s('ab')], 'abcd').toString()).toBe('cd');
    expect(unstreamedTail([s('xy')], 'abcd').length).toBe(0);
  });
});

describe('zviz run through the command line', () => {
  it('a limit above the profile max exits 2 with one line naming the flag and the max, before any privilege is needed', async () => {
    const io = recordedIo();
    expect(await cli(['run', '--memory', '999999', '--', '/usr/bin/true'], io)).toBe(2);
    expect(io.err()).toBe('zviz: Invalid --memory: must be at most 1024 MiB for profile \'default\': current value is "999999"\n');
    expect(io.out()).toBe('');
  });

  it('--help prints the usage and exits 0', async () => {
    const io = recordedIo();
    expect(await cli(['run', '--help'], io)).toBe(0);
    expect(io.out()).toContain('usage: zviz run [options] -- CMD [ARGS…]');
  });

  it('a bad configuration variable is bad usage too', async () => {
    const io = recordedIo({ env: { ZVIZ_UID_BASE: 'x' } });
    expect(await cli(['run', '--', '/usr/bin/true'], io)).toBe(2);
    expect(io.err()).toContain('ZVIZ_UID_BASE');
  });
});

describe('the command line', () => {
  it('an unknown command exits 2 naming the known ones', async () => {
    const io = recordedIo();
    expect(await cli(['frobnicate'], io)).toBe(2);
    expect(io.err()).toBe('zviz: Unknown command "frobnicate": expected one of serve, run, invoke, deploy, job, image, doctor, sweep (see \'zviz --help\')\n');
  });

  it('no command prints the usage on stderr and exits 2; --help on stdout and exits 0', async () => {
    const bare = recordedIo();
    expect(await cli([], bare)).toBe(2);
    expect(bare.err()).toContain('usage: zviz COMMAND');
    const help = recordedIo();
    expect(await cli(['--help'], help)).toBe(0);
    expect(help.out()).toContain('usage: zviz COMMAND');
  });

  it.each(['serve', 'run', 'invoke', 'deploy', 'doctor', 'sweep'])('zviz %s --help', async (name) => {
    const io = recordedIo();
    expect(await cli([name, '--help'], io)).toBe(0);
    expect(io.out()).toContain(`usage: zviz ${name}`);
    expect(io.out()).toContain('-h, --help');
  });

  it('--version', async () => {
    const io = recordedIo();
    expect(await cli(['--version'], io)).toBe(0);
    expect(io.out()).toMatch(/^zviz \d+\.\d+\.\d+\n$/);
  });
});
