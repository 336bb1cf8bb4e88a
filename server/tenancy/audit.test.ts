import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AUDIT_FILE_RETRY_MS, AuditLog, tenantView, type AuditEntry } from './audit.js';
import type { Logger } from '../ops/log.js';
import { MemoryAuditStore } from '../../test/support/memory-state.js';

function capture(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const push = (msg: string) => lines.push(msg);
  return { lines, debug: push, info: push, warn: push, error: push };
}

const record = (tenant: string) => ({ type: 'admin', tenant, action: 'tenant.create', remote: null }) as const;

describe('AuditLog file', () => {
  const dirs: string[] = [];
  afterEach(() => {
    vi.useRealTimers();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  // A full disk or a vanished directory must not stop the audit file for the rest of the
  // process's life: once writable again, it takes records again.
  it('logs one line when the file cannot be written, and takes records again once it can', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const dir = mkdtempSync(join(tmpdir(), 'zviz-audit-'));
    dirs.push(dir);
    const path = join(dir, 'gone', 'audit.log');
    const log = capture();
    const audit = new AuditLog({ store: new MemoryAuditStore(), file: path, log });
    await audit.record(record('first'));
    await vi.waitFor(() => expect(log.lines).toContain('cannot write audit file'));
    await audit.record(record('second'));
    expect(log.lines.filter((l) => l === 'cannot write audit file')).toHaveLength(1);

    mkdirSync(join(dir, 'gone'));
    vi.setSystemTime(Date.now() + AUDIT_FILE_RETRY_MS + 1);
    await audit.record(record('third'));
    await vi.waitFor(() => expect(log.lines).toContain('audit file takes records again'));
    await audit.record(record('fourth'));
    await audit.close();
    const tenants = readFileSync(path, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).tenant);
    expect(tenants).toEqual(['third', 'fourth']);
  });
});

describe('tenantView', () => {
  const base = { id: '1-1', type: 'callback', time: '2026-01-01T00:00:00.000Z', tenant: 'acme', invocationId: 'i', origin: 'http://127.0.0.1:9' } as const;
  it.each([
    ['a delivered one', { delivered: true, attempts: 1, status: 204, error: null }, true, 'delivered 204'],
    ['a refused connection', { delivered: false, attempts: 3, status: null, error: 'connect ECONNREFUSED 127.0.0.1:9' }, false, 'failed'],
    ['an error status', { delivered: false, attempts: 1, status: 404, error: 'answered 404' }, false, 'failed'],
  ])('shows a callback record of the old shape (%s) by its coarse outcome only', (_what, old, delivered, outcome) => {
    expect(tenantView({ ...base, ...old } as unknown as AuditEntry)).toEqual({ ...base, delivered, outcome });
  });

  it('leaves a current callback record and other records as they are', () => {
    const current = { ...base, delivered: false, outcome: 'refused by policy' } as AuditEntry;
    expect(tenantView(current)).toEqual(current);
    const admin = { id: '1-2', time: base.time, type: 'admin', tenant: 'acme', action: 'tenant.create', remote: null } as AuditEntry;
    expect(tenantView(admin)).toBe(admin);
  });
});
