// Tenants and their API keys: the schemas of the admin API, the key format, and the store
// contract (server/state/redis-tenants.ts keeps them in Redis).
//
// An API key is `zviz_<keyId>_<secret>`: keyId is 16 hex digits used to find the tenant,
// secret is 32 random bytes in base64url. Only SHA-256 of the whole key is stored: with 256
// bits of randomness there is nothing to brute-force, so a slow hash or a pepper would add
// cost and no safety. Keys are compared as digests with timingSafeEqual.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { limitsSchema } from '../../profiles/schema.js';

export const TENANT_NAME_PATTERN = /^[a-z][a-z0-9-]{0,62}$/;
export const API_KEY_PATTERN = /^zviz_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/;

export const tenantNameSchema = z
  .string()
  .regex(TENANT_NAME_PATTERN, { error: 'must be lower-case letters, digits and dashes, starting with a letter, at most 63 characters' });

const quotaFields = {
  /** Invocations of the tenant running at once, over all hosts sharing the Redis. */
  concurrency: z.number().int().min(1).max(100_000),
  /** Token bucket: this many at once, refilled at this many per minute. */
  invocationsPerMinute: z.number().int().min(1).max(1_000_000),
  /** CPU-seconds (user + system, from the cgroup) the tenant may use per cpuWindowSeconds. */
  cpuSeconds: z.number().positive().max(1e9),
  /** Length of the CPU window; 3600 makes cpuSeconds a per-hour budget. */
  cpuWindowSeconds: z.number().int().min(1).max(7 * 24 * 3600),
  /** Caps below the profile's max: a request above one is refused, a profile default above one is lowered to it. */
  maxLimits: limitsSchema.partial(),
  /** Largest upload (POST /uploads) in MiB, below ZVIZ_MAX_UPLOAD_MB; unset: the server's cap. */
  maxUploadMb: z.number().int().min(1).max(65_536),
  /** The tenant's uploads stored on this host together, in MiB; unset: ZVIZ_MAX_UPLOAD_STORE_MB. */
  maxUploadStoreMb: z.number().int().min(1).max(16_777_216),
};

export const QUOTA_DEFAULTS = {
  concurrency: 4,
  invocationsPerMinute: 120,
  cpuSeconds: 900,
  cpuWindowSeconds: 3600,
  maxLimits: {},
} as const;

/** What a tenant may use. Every field has a default, so `{}` is a valid quota set. */
export const quotasSchema = z.strictObject({
  concurrency: quotaFields.concurrency.default(QUOTA_DEFAULTS.concurrency),
  invocationsPerMinute: quotaFields.invocationsPerMinute.default(QUOTA_DEFAULTS.invocationsPerMinute),
  cpuSeconds: quotaFields.cpuSeconds.default(QUOTA_DEFAULTS.cpuSeconds),
  cpuWindowSeconds: quotaFields.cpuWindowSeconds.default(QUOTA_DEFAULTS.cpuWindowSeconds),
  maxLimits: quotaFields.maxLimits.default({}),
  maxUploadMb: quotaFields.maxUploadMb.optional(),
  maxUploadStoreMb: quotaFields.maxUploadStoreMb.optional(),
});
export type Quotas = z.infer<typeof quotasSchema>;

export const createTenantSchema = z.strictObject({
  name: tenantNameSchema,
  quotas: quotasSchema.prefault({}),
});

/** PATCH replaces the quota fields it names (no defaults here); `maxLimits` is replaced whole. */
export const patchTenantSchema = z.strictObject({
  quotas: z.strictObject(quotaFields).partial(),
});
export type QuotasPatch = z.infer<typeof patchTenantSchema>['quotas'];

export const TENANT_STATUSES = ['active', 'disabled'] as const;

export const tenantSchema = z.strictObject({
  name: z.string(),
  status: z.enum(TENANT_STATUSES),
  quotas: quotasSchema,
  /** Identifies the current key (its second part); the key itself is never stored. */
  keyId: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type Tenant = z.infer<typeof tenantSchema>;

export const tenantUsageSchema = z.strictObject({
  /** Leases not yet released or expired, over all hosts. */
  inFlight: z.number().int(),
  /** CPU charged in the current window. */
  cpuMsInWindow: z.number(),
});
export type TenantUsage = z.infer<typeof tenantUsageSchema>;

export const tenantWithKeySchema = z.strictObject({
  tenant: tenantSchema,
  /** Shown once: only its SHA-256 is kept. */
  apiKey: z.string(),
});

/** A tenant as the store returns it from a key lookup: with the digest to compare against. */
export interface StoredTenant {
  tenant: Tenant;
  keyHash: string;
}

export class TenantExistsError extends Error {
  override name = 'TenantExistsError';
}

/** Where tenants live. Every method may reject when the store is unreachable. */
export interface TenantStore {
  /** Rejects with TenantExistsError when the name is taken (also by a disabled tenant). */
  create(name: string, quotas: Quotas): Promise<{ tenant: Tenant; apiKey: string }>;
  get(name: string): Promise<Tenant | null>;
  list(): Promise<Tenant[]>;
  count(): Promise<number>;
  /** null when there is no such tenant. */
  setQuotas(name: string, quotas: Quotas): Promise<Tenant | null>;
  /** A new key; the old one stops working at once. null when there is no such tenant. */
  rotateKey(name: string): Promise<{ tenant: Tenant; apiKey: string } | null>;
  /** Keys of a disabled tenant stop working; the name stays taken. null when there is no such tenant. */
  disable(name: string): Promise<Tenant | null>;
  /** The tenant whose current key has this id, with its digest; null when none. */
  findByKeyId(keyId: string): Promise<StoredTenant | null>;
}

export interface NewKey {
  apiKey: string;
  keyId: string;
  keyHash: string;
}

export function hashApiKey(apiKey: string): string {
  return createHash('sha256').update(apiKey, 'utf8').digest('hex');
}

export function newApiKey(): NewKey {
  const keyId = randomBytes(8).toString('hex');
  const apiKey = `zviz_${keyId}_${randomBytes(32).toString('base64url')}`;
  return { apiKey, keyId, keyHash: hashApiKey(apiKey) };
}

/** The key id of a well-formed key, or null. */
export function keyIdOf(apiKey: string): string | null {
  return API_KEY_PATTERN.exec(apiKey)?.[1] ?? null;
}

// Compared when no tenant has the key id, so an unknown id costs the same as a wrong secret.
const DECOY_HASH = hashApiKey('zviz_0000000000000000_decoy');

/** Constant-time check of a key against a stored digest (or the decoy when there is none). */
export function keyMatches(apiKey: string, storedHash: string | null): boolean {
  const presented = Buffer.from(hashApiKey(apiKey), 'hex');
  const stored = Buffer.from(storedHash ?? DECOY_HASH, 'hex');
  // Both are SHA-256 digests; a corrupt stored value must not throw out of timingSafeEqual.
  const same = stored.length === presented.length && timingSafeEqual(stored, presented);
  return same && storedHash !== null;
}

/** SHA-256 both sides so neither the length nor the content of the token leaks through timing. */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}
