// Tenants in Redis: one hash per tenant (`zviz:{<name>}`, shared with its quota counters:
// ./scripts.ts), an index from key id to tenant (`zviz:apikey:<keyId>`), and the set of
// names (`zviz:tenants`). These live in different Cluster slots, so a change writes the
// tenant hash first (one script: it decides) and the index after it; a lookup trusts the
// index only when the hash still names the same key id, so a rotated key stops working with
// the hash's change, and an index entry left behind by a failure is harmless.
import {
  newApiKey,
  quotasSchema,
  TenantExistsError,
  TENANT_STATUSES,
  type Quotas,
  type StoredTenant,
  type Tenant,
  type TenantStore,
} from '../tenancy/tenants.js';
import { keys, type RedisClient } from './redis.js';

function fromHash(h: Record<string, string>): StoredTenant | null {
  if (h.name === undefined) return null;
  const status = TENANT_STATUSES.find((s) => s === h.status) ?? 'disabled';
  // A hash that does not parse is not trusted with anything: it reads as disabled.
  let raw: unknown = null;
  try {
    raw = JSON.parse(h.quotas ?? 'null');
  } catch { // unparseable quotas stay null and fail the schema below: the tenant reads as disabled
  }
  const quotas = quotasSchema.safeParse(raw);
  return {
    tenant: {
      name: h.name,
      status: quotas.success ? status : 'disabled',
      quotas: quotas.success ? quotas.data : quotasSchema.parse({}),
      keyId: h.keyId ?? '',
      createdAt: h.createdAt ?? '',
      updatedAt: h.updatedAt ?? '',
    },
    keyHash: h.keyHash ?? '',
  };
}

const FIELDS = ['name', 'status', 'quotas', 'keyId', 'keyHash', 'createdAt', 'updatedAt'] as const;

function record(values: Array<string | null>): Record<string, string> {
  const out: Record<string, string> = {};
  FIELDS.forEach((f, i) => {
    const v = values[i];
    if (v !== null && v !== undefined) out[f] = v;
  });
  return out;
}

export class RedisTenantStore implements TenantStore {
  constructor(private readonly redis: RedisClient) {}

  async #read(name: string): Promise<StoredTenant | null> {
    return fromHash(record(await this.redis.hmget(keys.tenant(name), ...FIELDS)));
  }

  async create(name: string, quotas: Quotas): Promise<{ tenant: Tenant; apiKey: string }> {
    const key = newApiKey();
    const now = new Date().toISOString();
    const created = await this.redis.zvizTenantCreate(keys.tenant(name), name, JSON.stringify(quotas), key.keyId, key.keyHash, now);
    if (created !== 1) throw new TenantExistsError(`Tenant '${name}' exists`);
    await this.redis.set(keys.apiKey(key.keyId), name);
    await this.redis.sadd(keys.tenants, name);
    return {
      tenant: { name, status: 'active', quotas, keyId: key.keyId, createdAt: now, updatedAt: now },
      apiKey: key.apiKey,
    };
  }

  async get(name: string): Promise<Tenant | null> {
    return (await this.#read(name))?.tenant ?? null;
  }

  async list(): Promise<Tenant[]> {
    const names = (await this.redis.smembers(keys.tenants)).sort();
    // One read per tenant: the hashes may live on different Cluster nodes.
    const all = await Promise.all(names.map((n) => this.get(n)));
    return all.filter((t): t is Tenant => t !== null);
  }

  count(): Promise<number> {
    return this.redis.scard(keys.tenants);
  }

  /** Every tenant's name (start-up sweeps walk them). */
  names(): Promise<string[]> {
    return this.redis.smembers(keys.tenants);
  }

  async setQuotas(name: string, quotas: Quotas): Promise<Tenant | null> {
    const ok = await this.redis.zvizTenantSet(keys.tenant(name), new Date().toISOString(), 'quotas', JSON.stringify(quotas));
    return ok === 1 ? this.get(name) : null;
  }

  async rotateKey(name: string): Promise<{ tenant: Tenant; apiKey: string } | null> {
    const key = newApiKey();
    const old = await this.redis.zvizTenantRotate(keys.tenant(name), key.keyId, key.keyHash, new Date().toISOString());
    if (old === null) return null;
    // The old key stopped working above; these only keep the index tidy and point the new one.
    await this.redis.set(keys.apiKey(key.keyId), name);
    if (old !== '') await this.redis.del(keys.apiKey(old));
    const tenant = await this.get(name);
    return tenant ? { tenant, apiKey: key.apiKey } : null;
  }

  async disable(name: string): Promise<Tenant | null> {
    const ok = await this.redis.zvizTenantSet(keys.tenant(name), new Date().toISOString(), 'status', 'disabled');
    return ok === 1 ? this.get(name) : null;
  }

  async findByKeyId(keyId: string): Promise<StoredTenant | null> {
    const name = await this.redis.get(keys.apiKey(keyId));
    // An unknown id costs a second read too, so the time to answer says nothing about which.
    const stored = await this.#read(name ?? '-');
    return name !== null && stored !== null && stored.tenant.keyId === keyId ? stored : null;
  }
}
