// What an invocation may ask for: its profile, its runtime under that profile, and limits
// within the profile's maxima and the tenant's caps. Checked again at deploy, so a deployed
// function fails early rather than at every invocation. Pure: no I/O.
import { LIMIT_NAMES, type Limits, type Profile, type Runtime } from '../../profiles/schema.js';
import { ApiError } from '../http/errors.js';

export function findProfile(profiles: ReadonlyMap<string, Profile>, name: string): Profile {
  const profile = profiles.get(name);
  if (profile === undefined) {
    throw new ApiError('UNKNOWN_PROFILE', `Cannot find profile: no profile is named '${name}'`, { profile: name });
  }
  return profile;
}

/** A tenant's caps below the profile (quotas.maxLimits). */
export interface TenantCap {
  tenant: string;
  max: Partial<Limits>;
}

/**
 * Each limit comes from the request if set, else the profile's default lowered to the
 * tenant's cap; none may pass the profile's max (LIMIT_EXCEEDS_PROFILE) or the tenant's cap
 * (QUOTA_LIMITS).
 */
export function resolveLimits(profile: Profile, requested: Partial<Limits> = {}, cap?: TenantCap): Limits {
  const limits: Limits = { ...profile.limits.defaults };
  for (const field of LIMIT_NAMES) {
    const capped = cap?.max[field];
    const value = requested[field];
    if (value === undefined) {
      if (capped !== undefined && capped < limits[field]) limits[field] = capped;
      continue;
    }
    const max = profile.limits.max[field];
    if (value > max) {
      throw new ApiError(
        'LIMIT_EXCEEDS_PROFILE',
        `Cannot apply limits: ${field} must be at most ${max} for profile '${profile.name}': current value is ${value}`,
        { field, max, requested: value },
      );
    }
    if (cap !== undefined && capped !== undefined && value > capped) {
      throw new ApiError(
        'QUOTA_LIMITS',
        `Cannot apply limits: ${field} must be at most ${capped} for tenant '${cap.tenant}': current value is ${value}`,
        { quota: 'limits', field, max: capped, requested: value },
      );
    }
    limits[field] = value;
  }
  return limits;
}

/** RUNTIME_NOT_ALLOWED unless `profile` lets `runtime` run; `what` names the refused action. */
export function checkRuntime(profile: Profile, runtime: Runtime, what: string): void {
  if (profile.runtimes.includes(runtime)) return;
  throw new ApiError(
    'RUNTIME_NOT_ALLOWED',
    `Cannot ${what}: runtime '${runtime}' is not allowed by profile '${profile.name}': allowed runtimes are ${profile.runtimes.join(', ')}`,
    { runtime, profile: profile.name, allowed: profile.runtimes },
  );
}
