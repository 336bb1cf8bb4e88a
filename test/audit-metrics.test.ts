// Integration: the audit trail (file and Redis) and the Prometheus metrics of a real server
// with real sandboxes: a record for each kind of event, tenants kept apart, counters that
// move, and the loopback metrics listener.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawFetch } from './support/compat-auth.js';
import { logEntry } from './support/server-process.js';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';

type Sample = { name: string; labels: Record<string, string>; value: number };

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)(?: -?\d+)?$/;

/** Parses Prometheus text format 0.0.4; throws on the first line that does not conform. */
function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const [i, line] of text.split('\n').entries()) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) {
      if (!METRIC_NAME.test(line.split(' ')[2] ?? '')) throw new Error(`line ${i + 1}: bad HELP: ${line}`);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const [, , name = '', type = ''] = line.split(' ');
      if (!METRIC_NAME.test(name) || !['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(type)) {
        throw new Error(`line ${i + 1}: bad TYPE: ${line}`);
      }
      types.set(name, type);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`line ${i + 1}: not a sample: ${line}`);
    // Values are Go floats: NaN and Inf in any case (prom-client writes 'Nan').
    const raw = m[3]!;
    const value = /^[+-]?inf(inity)?$/i.test(raw) ? (raw.startsWith('-') ? -Infinity : Infinity) : /^nan$/i.test(raw) ? NaN : Number(raw);
    if (Number.isNaN(value) && !/^nan$/i.test(raw)) throw new Error(`line ${i + 1}: bad value: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value });
  }
  if (samples.length === 0) throw new Error('no samples');
  if (types.size === 0) throw new Error('no TYPE lines');
  return samples;
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const s = samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value ?? 0;
}

describe.skipIf(privilegedReason() !== null)('audit log and metrics over a real server', () => {
  let s: RunningServer;
  let a: { bearer: string };
  let b: { bearer: string };
  let metricsUrl: string;

  beforeAll(async () => {
    s = await startServer({ compatAuth: false, env: { ZVIZ_METRICS_PORT: '0' } });
    const ta = await s.request('/admin/tenants', { auth: 'admin', body: { name: 'tenant-a' } });
    const tb = await s.request('/admin/tenants', { auth: 'admin', body: { name: 'tenant-b', quotas: { invocationsPerMinute: 1 } } });
    a = { bearer: ta.body.apiKey };
    b = { bearer: tb.body.apiKey };
    metricsUrl = String(logEntry(s.logs(), 'metrics listening')?.url);
  });
  afterAll(async () => {
    await s?.stop();
  });

  const scrape = async (): Promise<Sample[]> => {
    const r = await s.request('/metrics', { auth: 'admin' });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return parsePrometheus(r.body as string);
  };

  it('/metrics parses as Prometheus text and its counters and histograms move with invocations', async () => {
    const before = await scrape();
    const labels = { tenant: 'tenant-a', runtime: 'bash', status: 'ok' };
    for (let i = 0; i < 2; i++) expect((await s.request('/invoke', { auth: a, body: { runtime: 'bash', code: 'echo hi' } })).status).toBe(200);
    const after = await scrape();
    expect(value(after, 'zviz_invocations_total', labels) - value(before, 'zviz_invocations_total', labels)).toBe(2);
    for (const h of ['zviz_sandbox_setup_seconds_count', 'zviz_run_seconds_count', 'zviz_queue_wait_seconds_count']) {
      expect(value(after, h, { runtime: 'bash' }) - value(before, h, { runtime: 'bash' }), h).toBe(2);
    }
    expect(value(after, 'zviz_sandbox_setup_seconds_sum', { runtime: 'bash' })).toBeGreaterThan(0);
    expect(value(after, 'zviz_sandboxes_in_flight')).toBe(0);
    expect(value(after, 'zviz_state_up')).toBe(1);
    expect(after.some((x) => x.name === 'process_cpu_seconds_total')).toBe(true);
  });

  it('records an invocation, its security events, an auth failure, a quota refusal and admin changes, in the file and in Redis', async () => {
    const before = await scrape();
    // A timeout: a 'limit' security event.
    const slow = await s.request('/invoke', { auth: a, body: { runtime: 'bash', code: 'sleep 5', limits: { timeoutMs: 300 } } });
    expect(slow.body.status).toBe('timeout');
    // An OOM kill: another 'limit' event.
    const bomb = 'x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))';
    const oom = await s.request('/invoke', { auth: a, body: { runtime: 'python', code: bomb, limits: { memoryMb: 64, timeoutMs: 10_000 } } });
    expect(oom.body.status).toBe('oom');
    // An auth failure and a quota refusal (tenant-b may start one invocation per minute).
    expect((await s.request('/invoke', { auth: { bearer: a.bearer.slice(0, -2) + 'zz' }, body: { runtime: 'bash', code: 'true' } })).status).toBe(401);
    expect((await s.request('/invoke', { auth: b, body: { runtime: 'bash', code: 'true' } })).status).toBe(200);
    const refused = await s.request('/invoke', { auth: b, body: { runtime: 'bash', code: 'true' } });
    expect(refused.body.error.code).toBe('QUOTA_RATE');
    await s.request('/admin/tenants/tenant-b/keys', { method: 'POST', auth: 'admin' }).then((r) => (b = { bearer: r.body.apiKey }));

    const page = await s.request('/admin/audit?limit=1000', { auth: 'admin' });
    expect(page.status).toBe(200);
    const records = page.body.records as Array<Record<string, any>>;
    const has = (pred: (r: Record<string, any>) => boolean, what: string) => expect(records.some(pred), what).toBe(true);
    has((r) => r.type === 'invocation' && r.tenant === 'tenant-a' && r.status === 'timeout' && r.reason === 'timeout' && r.limits.timeoutMs === 300, 'invocation');
    has((r) => r.type === 'invocation' && r.status === 'oom' && typeof r.memoryPeakBytes === 'number' && typeof r.cpuMs === 'number', 'oom invocation');
    has((r) => r.type === 'security' && r.event.kind === 'limit' && r.event.limit === 'timeout', 'timeout event');
    has((r) => r.type === 'security' && r.event.kind === 'limit' && r.event.limit === 'memory', 'memory event');
    has((r) => r.type === 'auth' && r.reason === 'wrong-key' && r.tenant === 'tenant-a' && r.remote === '127.0.0.1', 'auth failure');
    has((r) => r.type === 'quota' && r.tenant === 'tenant-b' && r.quota === 'rate' && r.code === 'QUOTA_RATE', 'quota refusal');
    has((r) => r.type === 'admin' && r.action === 'key.rotate' && r.tenant === 'tenant-b', 'key rotation');
    has((r) => r.type === 'admin' && r.action === 'tenant.create' && r.tenant === 'tenant-a', 'tenant creation');

    // The file holds the same records, one JSON object per line.
    const lines = readFileSync(join(s.stateDir, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    for (const type of ['invocation', 'security', 'auth', 'quota', 'admin']) expect(lines.some((l) => l.type === type), type).toBe(true);
    expect(lines.length).toBeGreaterThanOrEqual(records.length);

    const after = await scrape();
    expect(value(after, 'zviz_quota_refusals_total', { tenant: 'tenant-b', quota: 'rate' }) - value(before, 'zviz_quota_refusals_total', { tenant: 'tenant-b', quota: 'rate' })).toBe(1);
    expect(value(after, 'zviz_security_events_total', { tenant: 'tenant-a', kind: 'limit' }) - value(before, 'zviz_security_events_total', { tenant: 'tenant-a', kind: 'limit' })).toBe(2);
    expect(value(after, 'zviz_auth_failures_total', { reason: 'wrong-key' }) - value(before, 'zviz_auth_failures_total', { reason: 'wrong-key' })).toBe(1);
    expect(value(after, 'zviz_invocations_total', { tenant: 'tenant-a', runtime: 'python', status: 'oom' })).toBeGreaterThanOrEqual(1);
  });

  it("a tenant reads its own records and cannot read another tenant's", async () => {
    const mine = await s.request('/audit?limit=1000', { auth: a });
    expect(mine.status).toBe(200);
    expect(mine.body.records.length).toBeGreaterThan(0);
    expect(new Set(mine.body.records.map((r: { tenant: string }) => r.tenant))).toEqual(new Set(['tenant-a']));
    const theirs = await s.request('/audit?tenant=tenant-b', { auth: a });
    expect(theirs.status).toBe(403);
    expect(theirs.body.error.code).toBe('FORBIDDEN');
    const bRecords = await s.request('/audit?limit=1000', { auth: b });
    expect(bRecords.body.records.every((r: { tenant: string }) => r.tenant === 'tenant-b')).toBe(true);
    expect(bRecords.body.records.some((r: { type: string }) => r.type === 'quota')).toBe(true);
    // The admin filters by tenant.
    const admin = await s.request('/admin/audit?tenant=tenant-b&limit=1000', { auth: 'admin' });
    expect(admin.body.records.length).toBe(bRecords.body.records.length);
  });

  it('pages backwards through the records with the cursor', async () => {
    const all = (await s.request('/admin/audit?limit=1000', { auth: 'admin' })).body.records.map((r: { id: string }) => r.id);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = (await s.request(`/admin/audit?limit=3${cursor ? `&cursor=${cursor}` : ''}`, { auth: 'admin' })).body;
      seen.push(...page.records.map((r: { id: string }) => r.id));
      cursor = page.nextCursor;
    } while (cursor !== null && seen.length < 2000);
    expect(seen).toEqual(all);
  });

  it('/metrics needs the admin token, but the ZVIZ_METRICS_PORT listener on loopback does not', async () => {
    expect((await s.request('/metrics', { auth: false })).status).toBe(401);
    expect(new URL(metricsUrl).hostname).toBe('127.0.0.1');
    const r = await rawFetch(metricsUrl);
    expect(r.status).toBe(200);
    expect(value(parsePrometheus(await r.text()), 'zviz_invocations_total', { tenant: 'tenant-a', runtime: 'bash', status: 'ok' })).toBeGreaterThanOrEqual(2);
    expect((await rawFetch(metricsUrl.replace('/metrics', '/invoke'), { method: 'POST' })).status).toBe(404);
  });
});
