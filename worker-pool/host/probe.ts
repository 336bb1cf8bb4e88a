// What this host can do: the facts GET /host reports and start-up logs, and the checks
// that stop start-up when something a sandbox needs is missing.
import { existsSync, readFileSync } from 'node:fs';
import * as native from '../native.js';
import { planCgroups, type CgroupPlan } from './cgroups.js';
import type { Profile } from '../../profiles/schema.js';
import { landlockRefusal, unenforcedRights } from '../landlock.js';
import type { HostFacts } from '../types.js';

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null; // absent on this kernel: the fact reads as unknown
  }
}

function findNft(): string | null {
  for (const p of ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft']) if (existsSync(p)) return p;
  return null;
}

const abiState = (v: boolean | null) => (v === null ? 'unknown' : v ? 'present' : 'absent');

/** `IA32 (int 0x80) present, x32 absent`. */
export function describeAbis(a: { ia32: boolean | null; x32: boolean | null }): string {
  return `IA32 (int 0x80) ${abiState(a.ia32)}, x32 ${abiState(a.x32)}`;
}

/** Where the kernel lists the loaded AppArmor profiles, one `name (mode)` a line. */
export const APPARMOR_PROFILES = '/sys/kernel/security/apparmor/profiles';

/** The profile names of APPARMOR_PROFILES' text. */
export function parseAppArmorProfiles(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^(.+) \(([^()]+)\)$/.exec(line.trim());
    if (m) out.push(m[1]!);
  }
  return out;
}

/** The loaded AppArmor profiles, or null when the list cannot be read (AppArmor off, securityfs not mounted). */
export function loadedAppArmorProfiles(): string[] | null {
  const text = read(APPARMOR_PROFILES);
  return text === null ? null : parseAppArmorProfiles(text);
}

/** The AppArmor profiles the ZViz profiles name that the kernel has not loaded, as `zviz profile → AppArmor profile`. */
export function unloadedAppArmorProfiles(profiles: Iterable<Profile>, loaded: readonly string[] | null): Array<{ profile: string; apparmor: string }> {
  const out: Array<{ profile: string; apparmor: string }> = [];
  for (const p of profiles) {
    if (p.apparmorProfile && !(loaded ?? []).includes(p.apparmorProfile)) out.push({ profile: p.name, apparmor: p.apparmorProfile });
  }
  return out;
}

/**
 * GET /readyz's AppArmor check, read afresh each time (a profile unloaded after start-up
 * makes every invocation of its functions fail): null when no ZViz profile names one.
 */
export function appArmorReadiness(profiles: Iterable<Profile>): { ok: boolean; detail: string } | null {
  const named = [...profiles].filter((p) => p.apparmorProfile);
  if (named.length === 0) return null;
  const missing = unloadedAppArmorProfiles(named, loadedAppArmorProfiles());
  if (missing.length === 0) return { ok: true, detail: `loaded: ${[...new Set(named.map((p) => p.apparmorProfile))].join(', ')}` };
  return { ok: false, detail: `not loaded: ${missing.map((m) => `'${m.apparmor}' (profile '${m.profile}')`).join(', ')}` };
}

export function probeHost(): { facts: HostFacts; cgroupPlan: CgroupPlan } {
  const k = native.probe() as {
    kernel: string;
    arch: string;
    maxUserNamespaces: number;
    landlockAbi: number;
    landlockErrno: number;
    seccomp: { available: boolean; actions: string[] };
    syscallAbis: { ia32: boolean | null; x32: boolean | null };
    nativeAbi: number;
  };
  const cgroupPlan = planCgroups(read('/proc/self/cgroup') ?? '', read('/proc/self/mountinfo') ?? '');
  const lsmText = read('/sys/kernel/security/lsm');
  const lsm = lsmText ? lsmText.trim().split(',').filter(Boolean) : [];
  const apparmor = lsm.includes('apparmor') || (read('/sys/module/apparmor/parameters/enabled') ?? '').trim() === 'Y';
  const selinux = lsm.includes('selinux') || existsSync('/sys/fs/selinux/enforce');
  const nft = findNft();
  const userns = k.maxUserNamespaces > 0;
  const parents = Object.fromEntries(cgroupPlan.parents.map((p) => [p.controllers.join(','), p.parent]));
  return {
    cgroupPlan,
    facts: {
      kernel: k.kernel,
      arch: k.arch,
      userNamespaces: {
        available: userns,
        maxUserNamespaces: k.maxUserNamespaces >= 0 ? k.maxUserNamespaces : null,
        detail: userns ? `user.max_user_namespaces = ${k.maxUserNamespaces}` : 'user namespaces are disabled',
      },
      cgroup: { driver: cgroupPlan.driver, controllers: cgroupPlan.controllers, parents, detail: cgroupPlan.detail },
      landlock: {
        abi: k.landlockAbi,
        unenforced: unenforcedRights(k.landlockAbi),
        detail: k.landlockAbi > 0 ? `Landlock ABI ${k.landlockAbi}` : `Landlock unavailable (errno ${k.landlockErrno})`,
      },
      seccomp: {
        available: k.seccomp.available,
        actions: k.seccomp.actions,
        userNotification: k.seccomp.actions.includes('user_notif'),
        detail: k.seccomp.available ? `actions: ${k.seccomp.actions.join(' ')}` : 'seccomp unavailable',
      },
      nftables: { available: nft !== null, detail: nft ? `nft at ${nft}` : 'nft not installed (apt-get install nftables)' },
      lsm: { list: lsm, apparmor, selinux, apparmorLoaded: apparmor ? loadedAppArmorProfiles() : null },
      syscallAbis: { ...k.syscallAbis, detail: describeAbis(k.syscallAbis) },
      nativeAbi: k.nativeAbi,
    },
  };
}

/** One line per missing requirement, each saying how to fix it. Empty when the host is fit. */
export function missingRequirements(
  facts: HostFacts,
  profileList: Iterable<Profile> = [],
  options: { allowTestProfiles?: boolean } = {},
): string[] {
  const out: string[] = [];
  const profiles = [...profileList];
  for (const p of profiles) {
    if (p.network.mode === 'join' && !options.allowTestProfiles) {
      out.push(
        `Profile '${p.name}' uses network mode 'join', which is for tests only: remove the profile, or set ZVIZ_ALLOW_TEST_PROFILES=1 on a test host`,
      );
    }
  }
  for (const p of profiles) {
    const why = landlockRefusal(p, facts.landlock.abi);
    if (why) out.push(why);
  }
  for (const p of profiles) {
    if (p.apparmorProfile && !facts.lsm.apparmor) {
      out.push(
        `Profile '${p.name}' names AppArmor profile '${p.apparmorProfile}' but AppArmor is not enabled on this host: remove apparmorProfile from the profile or enable AppArmor`,
      );
    }
  }
  // Like a missing Landlock ABI: a profile the kernel does not know would fail every
  // invocation (exit 127 at the function's exec), so the server does not start.
  if (facts.lsm.apparmor) {
    for (const m of unloadedAppArmorProfiles(profiles, facts.lsm.apparmorLoaded ?? null)) {
      out.push(
        `Profile '${m.profile}' names AppArmor profile '${m.apparmor}', which is not loaded: load it (apparmor_parser -r profiles/apparmor/${m.apparmor} for the one ZViz ships) or remove apparmorProfile from the profile`,
      );
    }
  }
  if (!facts.userNamespaces.available) {
    out.push('Host lacks user namespaces (layer A): enable them with `sysctl -w user.max_user_namespaces=65536`');
  }
  if (facts.cgroup.driver === 'none') {
    out.push(
      `Host lacks usable cgroups (layer D): ${facts.cgroup.detail}; run ZViz in a cgroup with the memory and pids controllers delegated (e.g. systemd Delegate=yes)`,
    );
  }
  if (!existsSync(native.supervisorPath())) {
    out.push(`Host lacks the sandbox supervisor at ${native.supervisorPath()}: run \`npm run build:native\``);
  }
  return out;
}
