// In-process stores with the same contracts as the Redis ones, for unit tests of the app
// (app.request() with no Redis). They count for one process only: never use them to serve.
// `failing` makes every call reject, as an unreachable Redis does.
import type { HostIdentity, InvocationStore } from '../../server/invocation/async.js';
import type { AuditPage, AuditRecord, AuditStore } from '../../server/tenancy/audit.js';
import { codeBytesOf, metaOf, type FunctionMeta, type FunctionSpec, type FunctionStore, type FunctionVersion, type PutOptions, type PutOutcome } from '../../server/functions/store.js';
import type { Admission, ExpectedVersion, LeaseOwner, QuotaStore } from '../../server/tenancy/quotas.js';
import {
  newApiKey,
  quotasSchema,
  TenantExistsError,
  type Quotas,
  type StoredTenant,
  type Tenant,
  type TenantStore,
  type TenantUsage,
} from '../../server/tenancy/tenants.js';

export class StoreDown extends Error {
  override name = 'StoreDown';
  constructor() {
    super('Connection is closed.');
  }
}

/** A switch shared by the stores of one test: set `down` to make them all fail. */
export class Outage {
  down = false;
  check(): void {
    if (this.down) throw new StoreDown();
  }
}

export class MemoryTenantStore implements TenantStore {
  readonly #byName = new Map<string, StoredTenant>();
  readonly #byKeyId = new Map<string, string>();
  constructor(private readonly outage = new Outage()) {}

  async create(name: string, quotas: Quotas): Promise<{ tenant: Tenant; apiKey: string }> {
    this.outage.check();
    if (this.#byName.has(name)) throw new TenantExistsError(`Tenant '${name}' exists`);
    const key = newApiKey();
    const now = new Date().toISOString();
    const tenant: Tenant = { name, status: 'active', quotas, keyId: key.keyId, createdAt: now, updatedAt: now };
    this.#byName.set(name, { tenant, keyHash: key.keyHash });
    this.#byKeyId.set(key.keyId, name);
    return { tenant: structuredClone(tenant), apiKey: key.apiKey };
  }

  async get(name: string): Promise<Tenant | null> {
    this.outage.check();
    const t = this.#byName.get(name);
    return t ? structuredClone(t.tenant) : null;
  }

  async list(): Promise<Tenant[]> {
    this.outage.check();
    return [...this.#byName.values()].map((t) => structuredClone(t.tenant)).sort((a, b) => a.name.localeCompare(b.name));
  }

  async count(): Promise<number> {
    this.outage.check();
    return this.#byName.size;
  }

  #update(name: string, change: Partial<Tenant>, keyHash?: string): Tenant | null {
    const t = this.#byName.get(name);
    if (!t) return null;
    t.tenant = { ...t.tenant, ...change, updatedAt: new Date().toISOString() };
    if (keyHash !== undefined) t.keyHash = keyHash;
    return structuredClone(t.tenant);
  }

  async setQuotas(name: string, quotas: Quotas): Promise<Tenant | null> {
    this.outage.check();
    return this.#update(name, { quotas });
  }

  async rotateKey(name: string): Promise<{ tenant: Tenant; apiKey: string } | null> {
    this.outage.check();
    const old = this.#byName.get(name)?.tenant.keyId;
    if (old === undefined) return null;
    const key = newApiKey();
    this.#byKeyId.delete(old);
    this.#byKeyId.set(key.keyId, name);
    const tenant = this.#update(name, { keyId: key.keyId }, key.keyHash);
    return tenant ? { tenant, apiKey: key.apiKey } : null;
  }

  async disable(name: string): Promise<Tenant | null> {
    this.outage.check();
    return this.#update(name, { status: 'disabled' });
  }

  /** The stored tenant, without the outage check (the quota store's own read of the hash). */
  peek(name: string): StoredTenant | undefined {
    return this.#byName.get(name);
  }

  async findByKeyId(keyId: string): Promise<StoredTenant | null> {
    this.outage.check();
    const name = this.#byKeyId.get(keyId);
    const t = name === undefined ? undefined : this.#byName.get(name);
    return t ? structuredClone(t) : null;
  }
}

/** Same rules as the Lua scripts (concurrency leases, GCRA rate, CPU window), on a clock of its own. */
export class MemoryQuotaStore implements QuotaStore {
  readonly #leases = new Map<string, Map<string, number>>();
  readonly #tat = new Map<string, number>();
  readonly #cpu = new Map<string, Array<{ at: number; ms: number }>>();
  readonly #charged = new Set<string>();
  /** Every release, in order: what the tests check "released exactly once" against. */
  readonly released: Array<{ tenant: string; leaseId: string; cpuMs: number }> = [];

  constructor(
    private readonly outage = new Outage(),
    private readonly now: () => number = () => Date.now(),
    /**
     * As the Redis hash holds both: the tenant record admission checks, and the stream
     * releases append to; and the functions whose latest version admission checks (without
     * them, every such check fails, and the server asks the function store instead).
     */
    private readonly shared: { tenants?: MemoryTenantStore; audit?: MemoryAuditStore; functions?: MemoryFunctionStore } = {},
  ) {}

  #live(tenant: string): Map<string, number> {
    const leases = this.#leases.get(tenant) ?? new Map<string, number>();
    this.#leases.set(tenant, leases);
    const now = this.now();
    for (const [id, expiry] of leases) if (expiry <= now) leases.delete(id);
    return leases;
  }

  #cpuUsed(tenant: string, windowMs: number): Array<{ at: number; ms: number }> {
    const from = this.now() - windowMs;
    const charges = (this.#cpu.get(tenant) ?? []).filter((c) => c.at > from);
    this.#cpu.set(tenant, charges);
    return charges;
  }

  async acquire(who: { name: string; keyId: string }, leaseId: string, leaseTtlMs: number, _owner: LeaseOwner, fn?: ExpectedVersion): Promise<Admission> {
    this.outage.check();
    const tenant = who.name;
    const stored = this.shared.tenants?.peek(tenant);
    if (this.shared.tenants !== undefined && (stored === undefined || stored.tenant.keyId !== who.keyId || stored.tenant.status !== 'active')) {
      return { ok: false, quota: 'key' };
    }
    if (fn !== undefined) {
      const latest = this.shared.functions?.peekLatest(tenant, fn.name) ?? null;
      if (latest !== fn.version) return { ok: false, quota: 'version', latest };
    }
    const quotas = stored?.tenant.quotas ?? quotasSchema.parse({});
    const now = this.now();
    const leases = this.#live(tenant);
    if (leases.size >= quotas.concurrency) return { ok: false, quota: 'concurrency', retryAfterMs: 1000, used: leases.size };
    const interval = 60_000 / quotas.invocationsPerMinute;
    const tat = Math.max(this.#tat.get(tenant) ?? 0, now) + interval;
    if (tat - 60_000 - now > 0.5) return { ok: false, quota: 'rate', retryAfterMs: Math.ceil(tat - 60_000 - now), used: quotas.invocationsPerMinute };
    const windowMs = quotas.cpuWindowSeconds * 1000;
    const charges = this.#cpuUsed(tenant, windowMs);
    const total = charges.reduce((sum, c) => sum + c.ms, 0);
    if (total >= quotas.cpuSeconds * 1000) {
      let remaining = total;
      let retry = windowMs;
      for (const c of charges) {
        remaining -= c.ms;
        if (remaining < quotas.cpuSeconds * 1000) {
          retry = c.at + windowMs - now;
          break;
        }
      }
      return { ok: false, quota: 'cpu', retryAfterMs: Math.max(1, Math.ceil(retry)), used: total };
    }
    leases.set(leaseId, now + leaseTtlMs);
    this.#tat.set(tenant, tat);
    return { ok: true, inFlight: leases.size };
  }

  async refresh(tenant: string, leaseId: string, leaseTtlMs: number): Promise<boolean> {
    this.outage.check();
    const leases = this.#live(tenant);
    if (!leases.has(leaseId)) return false;
    leases.set(leaseId, this.now() + leaseTtlMs);
    return true;
  }

  async release(tenant: string, leaseId: string, cpuMs: number, auditRecords: readonly string[] = []): Promise<boolean> {
    this.outage.check();
    this.released.push({ tenant, leaseId, cpuMs });
    // As the script: a lease's CPU and records are stored by its first release only.
    const first = !this.#charged.has(`${tenant}:${leaseId}`);
    this.#charged.add(`${tenant}:${leaseId}`);
    this.#live(tenant).delete(leaseId);
    if (!first) return false;
    if (cpuMs > 0) this.#cpu.set(tenant, [...(this.#cpu.get(tenant) ?? []), { at: this.now(), ms: Math.ceil(cpuMs) }]);
    for (const r of auditRecords) await this.shared.audit?.append(JSON.parse(r) as AuditRecord);
    return true;
  }

  async usage(tenant: string, quotas: Quotas): Promise<TenantUsage> {
    this.outage.check();
    const charges = this.#cpuUsed(tenant, quotas.cpuWindowSeconds * 1000);
    return { inFlight: this.#live(tenant).size, cpuMsInWindow: charges.reduce((sum, c) => sum + c.ms, 0) };
  }
}

export class MemoryAuditStore implements AuditStore {
  readonly records: Array<AuditRecord & { id: string }> = [];
  #seq = 0;
  constructor(private readonly outage = new Outage()) {}

  async append(record: AuditRecord): Promise<string> {
    this.outage.check();
    const id = `${Date.now()}-${this.#seq++}`;
    this.records.push({ id, ...record });
    return id;
  }

  async list(query: { tenant?: string; limit: number; cursor?: string }): Promise<AuditPage> {
    this.outage.check();
    let rows = [...this.records].reverse();
    if (query.tenant !== undefined) rows = rows.filter((r) => r.tenant === query.tenant);
    if (query.cursor !== undefined) {
      const at = rows.findIndex((r) => r.id === query.cursor);
      rows = at < 0 ? [] : rows.slice(at + 1);
    }
    const page = rows.slice(0, query.limit);
    return { records: page, nextCursor: page.length === query.limit ? page[page.length - 1]!.id : null };
  }
}

/** Same rules as the Redis scripts: version numbers never reused, the last `keep` kept. */
export class MemoryFunctionStore implements FunctionStore {
  readonly #fns = new Map<string, { latest: number; createdAt: string; digest: string }>();
  readonly #versions = new Map<string, FunctionVersion>();
  readonly #seq = new Map<string, number>();
  constructor(private readonly outage = new Outage()) {}

  async put(tenant: string, name: string, spec: FunctionSpec, digest: string, opts: PutOptions): Promise<PutOutcome> {
    this.outage.check();
    const key = `${tenant}:${name}`;
    const fn = this.#fns.get(key);
    if (fn && opts.onlyIfChanged && fn.digest === digest) return { outcome: 'unchanged', meta: (await this.get(tenant, name))! };
    if (!fn) {
      const count = [...this.#fns.keys()].filter((k) => k.startsWith(`${tenant}:`)).length;
      if (count >= opts.maxFunctions) return { outcome: 'too-many', count };
    }
    const version = (this.#seq.get(key) ?? 0) + 1;
    this.#seq.set(key, version);
    const now = new Date().toISOString();
    const v: FunctionVersion = structuredClone({ ...spec, name, version, digest, codeBytes: codeBytesOf(spec.files), createdAt: now });
    this.#versions.set(`${key}:${version}`, v);
    this.#versions.delete(`${key}:${version - opts.keepVersions}`);
    this.#fns.set(key, { latest: version, createdAt: fn?.createdAt ?? now, digest });
    return { outcome: 'created', meta: metaOf(v, fn?.createdAt ?? now) };
  }

  async get(tenant: string, name: string): Promise<FunctionMeta | null> {
    this.outage.check();
    const fn = this.#fns.get(`${tenant}:${name}`);
    const v = fn && this.#versions.get(`${tenant}:${name}:${fn.latest}`);
    return fn && v ? metaOf(structuredClone(v), fn.createdAt) : null;
  }

  async list(tenant: string): Promise<FunctionMeta[]> {
    this.outage.check();
    const names = [...this.#fns.keys()].filter((k) => k.startsWith(`${tenant}:`)).map((k) => k.slice(tenant.length + 1));
    const out: FunctionMeta[] = [];
    for (const n of names.sort()) {
      const m = await this.get(tenant, n);
      if (m) out.push(m);
    }
    return out;
  }

  async remove(tenant: string, name: string): Promise<boolean> {
    this.outage.check();
    const key = `${tenant}:${name}`;
    const fn = this.#fns.get(key);
    if (!fn) return false;
    for (const k of [...this.#versions.keys()]) if (k.startsWith(`${key}:`)) this.#versions.delete(k);
    this.#fns.delete(key);
    return true;
  }

  async latest(tenant: string, name: string): Promise<number | null> {
    this.outage.check();
    return this.peekLatest(tenant, name);
  }

  /** The latest version without the outage check (admission's view of it, as the quota store reads it). */
  peekLatest(tenant: string, name: string): number | null {
    return this.#fns.get(`${tenant}:${name}`)?.latest ?? null;
  }

  async version(tenant: string, name: string, version: number): Promise<FunctionVersion | null> {
    this.outage.check();
    const v = this.#versions.get(`${tenant}:${name}:${version}`);
    return v ? structuredClone(v) : null;
  }

  async bundleDigests(tenant: string): Promise<Set<string>> {
    this.outage.check();
    const out = new Set<string>();
    for (const [key, v] of this.#versions) if (key.startsWith(`${tenant}:`) && v.bundle) out.add(v.bundle.digest);
    return out;
  }

  async imageDigests(tenant: string): Promise<Set<string>> {
    this.outage.check();
    const out = new Set<string>();
    for (const [key, v] of this.#versions) if (key.startsWith(`${tenant}:`) && v.image) out.add(v.image.digest);
    return out;
  }
}

export class MemoryInvocationStore implements InvocationStore {
  readonly records = new Map<string, Record<string, unknown>>();
  readonly #hosts = new Map<string, Map<string, string>>();
  constructor(private readonly outage = new Outage()) {}

  async start(tenant: string, id: string, host: HostIdentity): Promise<void> {
    this.outage.check();
    this.records.set(`${tenant}:${id}`, { id, status: 'running', host: host.id, boot: host.boot });
    const index = this.#hosts.get(host.id) ?? new Map<string, string>();
    index.set(`${tenant}:${id}`, host.boot);
    this.#hosts.set(host.id, index);
  }

  async finish(tenant: string, id: string, host: HostIdentity, record: unknown): Promise<void> {
    this.outage.check();
    this.records.set(`${tenant}:${id}`, structuredClone(record) as Record<string, unknown>);
    this.#hosts.get(host.id)?.delete(`${tenant}:${id}`);
  }

  async get(tenant: string, id: string): Promise<Record<string, unknown> | null> {
    this.outage.check();
    const r = this.records.get(`${tenant}:${id}`);
    return r ? structuredClone(r) : null;
  }

  async recover(host: HostIdentity, message: string): Promise<number> {
    this.outage.check();
    let marked = 0;
    const index = this.#hosts.get(host.id) ?? new Map<string, string>();
    for (const [key, boot] of index) {
      if (boot === host.boot) continue;
      const r = this.records.get(key);
      if (r?.status === 'running') {
        this.records.set(key, { id: r.id, status: 'failed', reason: 'host-restart', error: { code: 'SANDBOX_FAILED', message } });
        marked++;
      }
      index.delete(key);
    }
    return marked;
  }
}
