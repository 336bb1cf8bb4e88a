// Tenants in Redis: one hash per tenant (`zviz:tenant:<name>`), an index from key id to
// tenant (`zviz:apikey:<keyId>`), and the set of names (`zviz:tenants`). Changes that touch
// more than one key run as one Lua script.
import type { Redis } from 'ioredis';
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
import { keys } from './redis.js';

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

function pairs(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

export class RedisTenantStore implements TenantStore {
  constructor(private readonly redis: Redis) {}

  async create(name: string, quotas: Quotas): Promise<{ tenant: Tenant; apiKey: string }> {
    const key = newApiKey();
    const now = new Date().toISOString();
    const created = await this.redis.zvizTenantCreate(
      keys.tenant(name),
      keys.apiKey(key.keyId),
      keys.tenants,
      name,
      JSON.stringify(quotas),
      key.keyId,
      key.keyHash,
      now,
    );
    if (created !== 1) throw new TenantExistsError(`Tenant '${name}' exists`);
    return {
      tenant: { name, status: 'active', quotas, keyId: key.keyId, createdAt: now, updatedAt: now },
      apiKey: key.apiKey,
    };
  }

  async get(name: string): Promise<Tenant | null> {
    return fromHash(await this.redis.hgetall(keys.tenant(name)))?.tenant ?? null;
  }

  async list(): Promise<Tenant[]> {
    const names = (await this.redis.smembers(keys.tenants)).sort();
    if (names.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const n of names) pipeline.hgetall(keys.tenant(n));
    const results = (await pipeline.exec()) ?? [];
    const out: Tenant[] = [];
    for (const [err, h] of results) {
      if (err) throw err;
      const t = fromHash(h as Record<string, string>);
      if (t) out.push(t.tenant);
    }
    return out;
  }

  count(): Promise<number> {
    return this.redis.scard(keys.tenants);
  }

  async setQuotas(name: string, quotas: Quotas): Promise<Tenant | null> {
    const ok = await this.redis.zvizTenantSet(keys.tenant(name), new Date().toISOString(), 'quotas', JSON.stringify(quotas));
    return ok === 1 ? this.get(name) : null;
  }

  async rotateKey(name: string): Promise<{ tenant: Tenant; apiKey: string } | null> {
    const key = newApiKey();
    const ok = await this.redis.zvizTenantRotate(
      keys.tenant(name),
      keys.apiKey(key.keyId),
      keys.apiKeyPrefix,
      name,
      key.keyId,
      key.keyHash,
      new Date().toISOString(),
    );
    if (ok !== 1) return null;
    const tenant = await this.get(name);
    return tenant ? { tenant, apiKey: key.apiKey } : null;
  }

  async disable(name: string): Promise<Tenant | null> {
    const ok = await this.redis.zvizTenantSet(keys.tenant(name), new Date().toISOString(), 'status', 'disabled');
    return ok === 1 ? this.get(name) : null;
  }

  async findByKeyId(keyId: string): Promise<StoredTenant | null> {
    return fromHash(pairs(await this.redis.zvizTenantByKey(keys.apiKey(keyId), keys.tenantPrefix)));
  }
}
