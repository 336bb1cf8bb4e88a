// `zviz doctor`: the host probe a server runs at start-up (every fact GET /host shows),
// judged ok / warn / fail, with what to do about anything missing. Exit 0 when this host
// can run the profiles (serve and run would start), 1 otherwise.
//
// doctorReport() is pure: facts and circumstances in, report out, so its judgement and
// formatDoctor()'s text are unit-tested from fake HostFacts.
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { loadProfiles, type Profile } from '../../profiles/index.js';
import { v2DelegationProblem } from '../../worker-pool/host/cgroups.js';
import { missingRequirements, probeHost } from '../../worker-pool/host/probe.js';
import { EXPECTED_ABI, supervisorPath } from '../../worker-pool/native.js';
import type { HostFacts } from '../../worker-pool/types.js';
import { imagesDir, storedImages } from '../../worker-pool/images/index.js';
import { loadConfig, type Config } from '../config.js';
import { helpText, noPositionals, parseCommandLine, type OptionSpecs } from './args.js';
import { EXIT } from './exit-codes.js';
import { Progress, writeJson, type Io } from './io.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const DOCTOR_OPTIONS = {
  json: { type: 'boolean', help: 'print the report (facts, checks, what to fix) as JSON on stdout' },
} as const satisfies OptionSpecs;

export const DOCTOR_HELP = helpText(
  'zviz doctor [--json]',
  `Probes this host as a server does at start-up — kernel, user namespaces, cgroups, Landlock,
seccomp, nftables, LSMs, the native build, the profiles — and says what to fix. Exit 0
when the host can run the profiles in ZVIZ_PROFILES_DIR, 1 otherwise.`,
  DOCTOR_OPTIONS,
);

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
  /** What to do; only where `missing` does not already say it. */
  fix?: string;
}

export interface DoctorReport {
  ok: boolean;
  /** null when the probe itself failed (native library missing or broken). */
  facts: HostFacts | null;
  checks: Check[];
  /** The lines start-up would stop with (missingRequirements), each saying how to fix it. */
  missing: string[];
}

/** What the report needs besides the facts: each found by the command, faked by tests. */
export interface Circumstances {
  root: boolean;
  /** The probe's failure, when there are no facts. */
  probeError: string | null;
  /** Loaded profiles, or why they could not be loaded. */
  profiles: Profile[] | { error: string };
  /** missingRequirements(facts, profiles) (empty when there are no facts). */
  missing: string[];
  /** The supervisor executable, and whether it is there. */
  supervisor: { path: string; present: boolean };
  /** Path of `ip` (iproute2), or null. */
  ip: string | null;
  /** The private Redis: null when ZVIZ_REDIS_URL names an external one. */
  redisServer: { name: string; path: string | null } | null;
  /** The image store's size against ZVIZ_IMAGE_CACHE_MB; null when there is no configuration to read. */
  imageStore?: { images: number; bytes: number; budgetBytes: number } | null;
}

const APT = (pkg: string) => `apt-get install ${pkg}`;

export function doctorReport(facts: HostFacts | null, c: Circumstances): DoctorReport {
  const checks: Check[] = [];
  const add = (name: string, status: CheckStatus, detail: string, fix?: string): void => {
    checks.push({ name, status, detail, ...(fix !== undefined ? { fix } : {}) });
  };
  const profiles = Array.isArray(c.profiles) ? c.profiles : [];
  const egress = profiles.filter((p) => p.network.mode === 'egress').map((p) => p.name);

  add(
    'privileges',
    c.root ? 'ok' : 'fail',
    c.root ? 'running as root' : 'not running as root',
    c.root ? undefined : 'run zviz serve and zviz run as root: namespaces, mounts and cgroups are set up by root',
  );
  if (facts === null) {
    const why = `cannot probe the host: ${c.probeError ?? 'unknown error'}`;
    add('native', 'fail', why, 'build the native layer: npm run build:native (make -C native)');
  } else {
    add('kernel', 'ok', `${facts.kernel} (${facts.arch})`);
    add('user namespaces', facts.userNamespaces.available ? 'ok' : 'fail', facts.userNamespaces.detail);

    const parents = Object.entries(facts.cgroup.parents).map(([k, v]) => `${k} → ${v}`);
    add('cgroups', facts.cgroup.driver === 'none' ? 'fail' : 'ok', [facts.cgroup.detail, ...parents].join('\n'));
    if (facts.cgroup.driver !== 'none' && !facts.cgroup.controllers.includes('cpu')) {
      add('cpu controller', 'warn', 'not available to ZViz: the cpus limit is not applied', 'delegate the cpu controller to the cgroup ZViz runs in');
    }

    if (facts.landlock.abi <= 0) {
      add('landlock', 'warn', facts.landlock.detail, 'boot a kernel with Landlock enabled (CONFIG_SECURITY_LANDLOCK, lsm=…,landlock)');
    } else if (facts.landlock.unenforced.length > 0) {
      add(
        'landlock',
        'warn',
        `${facts.landlock.detail}: cannot enforce ${facts.landlock.unenforced.join(', ')}`,
        'a newer kernel enforces them; profiles with landlock.bestEffort run without them and report them in each result',
      );
    } else add('landlock', 'ok', `${facts.landlock.detail}: every right enforced`);

    // Layer B cannot work without user notification: the broker is how denials are audited and files served.
    const seccompOk = facts.seccomp.available && facts.seccomp.userNotification;
    add(
      'seccomp',
      seccompOk ? 'ok' : 'fail',
      facts.seccomp.detail + (facts.seccomp.available && !facts.seccomp.userNotification ? ' (no user notification)' : ''),
      seccompOk ? undefined : 'use a kernel with CONFIG_SECCOMP_FILTER and seccomp user notification (SECCOMP_RET_USER_NOTIF)',
    );

    const netNeed = egress.length > 0 ? `profiles ${egress.join(', ')} give egress and need it` : 'only egress profiles need it';
    add(
      'nftables',
      facts.nftables.available ? 'ok' : egress.length > 0 ? 'fail' : 'warn',
      facts.nftables.available ? facts.nftables.detail : `nft not installed: ${netNeed}`,
      facts.nftables.available ? undefined : APT('nftables'),
    );
    add(
      'iproute2',
      c.ip !== null ? 'ok' : egress.length > 0 ? 'fail' : 'warn',
      c.ip !== null ? `ip at ${c.ip}` : `ip not installed: ${netNeed}`,
      c.ip !== null ? undefined : APT('iproute2'),
    );

    // Seccomp kills foreign-ABI calls where they exist; where they do not, the kernel refuses them first.
    add('syscall ABIs', 'ok', facts.syscallAbis.detail);

    const lsm = facts.lsm.list.length > 0 ? facts.lsm.list.join(', ') : 'none listed';
    add('lsm', 'ok', `${lsm}; AppArmor ${facts.lsm.apparmor ? 'enabled' : 'off'}, SELinux ${facts.lsm.selinux ? 'enabled' : 'off'}`);

    add(
      'native',
      c.supervisor.present && facts.nativeAbi === EXPECTED_ABI ? 'ok' : 'fail',
      c.supervisor.present ? `ABI ${facts.nativeAbi}, supervisor at ${c.supervisor.path}` : `no supervisor at ${c.supervisor.path}`,
    );
  }

  if (Array.isArray(c.profiles)) add('profiles', 'ok', c.profiles.map((p) => p.name).join(', '));
  else add('profiles', 'fail', c.profiles.error, 'fix the profile, or point ZVIZ_PROFILES_DIR at a directory of valid profiles');

  if (c.redisServer === null) add('redis', 'ok', 'external Redis (ZVIZ_REDIS_URL)');
  else if (c.redisServer.path !== null) add('redis', 'ok', `private redis-server at ${c.redisServer.path}`);
  else {
    add(
      'redis',
      'warn',
      `${c.redisServer.name} not found: zviz serve runs a private Redis unless ZVIZ_REDIS_URL is set (zviz run needs none)`,
      APT('redis-server'),
    );
  }

  if (c.imageStore) {
    const { images, bytes, budgetBytes } = c.imageStore;
    const mb = (b: number) => `${Math.ceil(b / (1024 * 1024))} MiB`;
    if (bytes <= budgetBytes) add('image store', 'ok', `${images} images, ${mb(bytes)} of ${mb(budgetBytes)} (ZVIZ_IMAGE_CACHE_MB)`);
    else {
      add(
        'image store',
        'warn',
        `${images} images, ${mb(bytes)}: over ZVIZ_IMAGE_CACHE_MB (${mb(budgetBytes)}). Collection never removes an image a deployed function pins, one in use or an import, so what is left stays`,
        'raise ZVIZ_IMAGE_CACHE_MB, or delete functions or images (zviz image rm); the server log and zviz_image_store_bytes{kind="pinned"} say how much is pinned',
      );
    }
  }

  const ok = c.missing.length === 0 && checks.every((k) => k.status !== 'fail');
  return { ok, facts, checks, missing: c.missing };
}

function imageStoreUsage(config: Config): { images: number; bytes: number; budgetBytes: number } {
  const all = storedImages(imagesDir(config.stateDir));
  return { images: all.length, bytes: all.reduce((n, r) => n + r.sizeBytes, 0), budgetBytes: config.images.cacheMb * 1024 * 1024 };
}

export function formatDoctor(r: DoctorReport): string {
  const width = Math.max(...r.checks.map((k) => k.name.length)) + 2;
  const lines = [r.ok ? 'This host can run the profiles.' : 'This host cannot run the profiles yet.', ''];
  for (const k of r.checks) {
    const [first, ...more] = k.detail.split('\n');
    lines.push(`  ${k.status.padEnd(5)} ${k.name.padEnd(width)}${first}`);
    for (const m of more) lines.push(`  ${''.padEnd(5)} ${''.padEnd(width)}${m}`);
    if (k.fix) lines.push(`  ${''.padEnd(5)} ${''.padEnd(width)}fix: ${k.fix}`);
  }
  if (r.missing.length > 0) {
    lines.push('', 'To fix before zviz serve or zviz run will start:');
    for (const m of r.missing) lines.push(`  - ${m}`);
  }
  return `${lines.join('\n')}\n`;
}

function findOnPath(name: string, extra: readonly string[], env: NodeJS.ProcessEnv): string | null {
  if (name.includes('/')) return existsSync(name) ? name : null;
  const dirs = [...(env.PATH ?? '').split(delimiter).filter(Boolean), ...extra];
  for (const d of dirs) {
    const p = join(d, name);
    if (existsSync(p)) return p;
  }
  return null;
}

export async function doctorCommand(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandLine('doctor', args, DOCTOR_OPTIONS);
  if (parsed.help) {
    io.stdout.write(DOCTOR_HELP);
    return EXIT.OK;
  }
  noPositionals('doctor', [...parsed.positionals, ...(parsed.rest ?? [])]);
  const progress = new Progress(io.stderr);
  progress.show('probing host…');

  let config: Config | null = null;
  let profiles: Profile[] | { error: string };
  try {
    config = loadConfig(io.env);
    profiles = [...loadProfiles(config.profilesDir).values()];
  } catch (e) {
    profiles = { error: errorMessage(e) };
  }
  let facts: HostFacts | null = null;
  let probeError: string | null = null;
  let delegation: string | null = null;
  try {
    const probed = probeHost();
    facts = probed.facts;
    // As start-up judges it: a server started from here shares this process's cgroup.
    delegation = v2DelegationProblem(probed.cgroupPlan);
  } catch (e) {
    probeError = errorMessage(e);
  }
  const sbin = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  const redis = config?.redisServer ?? 'redis-server';
  const options = { allowTestProfiles: config?.allowTestProfiles ?? false };
  const report = doctorReport(facts, {
    root: process.getuid?.() === 0,
    probeError,
    profiles,
    missing: facts ? [...missingRequirements(facts, Array.isArray(profiles) ? profiles : [], options), ...(delegation ? [delegation] : [])] : [],
    supervisor: { path: supervisorPath(), present: existsSync(supervisorPath()) },
    ip: findOnPath('ip', sbin, io.env),
    redisServer: config?.redisUrl != null ? null : { name: redis, path: findOnPath(redis, sbin, io.env) },
    imageStore: config ? imageStoreUsage(config) : null,
  });
  progress.clear();
  if (parsed.values.json === true) writeJson(io.stdout, report);
  else io.stdout.write(formatDoctor(report));
  return report.ok ? EXIT.OK : EXIT.FAILURE;
}
