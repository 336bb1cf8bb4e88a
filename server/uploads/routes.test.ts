// POST /uploads and DELETE /uploads/:digest against a real store in a temporary directory,
// no sandbox: one upload's cap (maxUploadMb), and each tenant's stored-bytes budget
// (maxUploadStoreMb) — refused once full, a stored digest accepted again at no cost, other
// tenants unaffected, room given back by DELETE.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { testApp, testState, testTenant } from '../../test/support/fixtures.js';
import { Bundles } from '../functions/bundles.js';
import { silentLogger } from '../ops/log.js';
import { UploadStore } from './store.js';

const MiB = 1024 * 1024;

let work: string;
let store: UploadStore;
let state: ReturnType<typeof testState>;
let app: ReturnType<typeof testApp>;

beforeEach(async () => {
  work = mkdtempSync(join(tmpdir(), 'zviz-uploads-'));
  store = new UploadStore({ dir: join(work, 'uploads'), remote: null, log: silentLogger });
  await store.open();
  const bundles = new Bundles({ uploads: store, cacheDir: join(work, 'cache'), maxBundleBytes: MiB, log: silentLogger });
  state = testState();
  app = testApp({ uploads: { store, bundles, maxUploadBytes: 4 * MiB, maxStoreBytes: 64 * MiB } }, state);
});

afterEach(() => rmSync(work, { recursive: true, force: true }));

/** A body of `bytes` bytes of `fill`, sent with its Content-Length or chunked (no length: the limits meet it while streaming). */
function body(bytes: number, fill: number, chunked: boolean): { body: BodyInit; duplex?: 'half' } {
  const buf = Buffer.alloc(bytes, fill);
  if (!chunked) return { body: buf };
  const chunk = 64 * 1024;
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (sent >= buf.length) return ctl.close();
      ctl.enqueue(buf.subarray(sent, sent + chunk));
      sent += chunk;
    },
  });
  return { body: stream, duplex: 'half' };
}

async function upload(key: string, bytes: number, fill: number, chunked = false) {
  const r = await app.request('/uploads', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
    ...body(bytes, fill, chunked),
  } as RequestInit);
  return { status: r.status, body: (await r.json()) as any };
}

const parts = () => readdirSync(join(work, 'uploads', '.part'));

describe('POST /uploads within the tenant quotas', () => {
  for (const chunked of [false, true]) {
    it(`an upload over the tenant's maxUploadMb is 413 PAYLOAD_TOO_LARGE (${chunked ? 'streamed' : 'declared'}) and leaves no part file`, async () => {
      const t = await testTenant(state, 'acme', { maxUploadMb: 1 });
      const r = await upload(t.apiKey, MiB + 1, 0x61, chunked);
      expect(r.status).toBe(413);
      expect(r.body.error.code).toBe('PAYLOAD_TOO_LARGE');
      expect(r.body.error.details).toEqual({ maxBytes: MiB });
      expect(parts()).toEqual([]);
      expect((await upload(t.apiKey, MiB, 0x61, chunked)).status).toBe(201);
    });

    it(`the stored-bytes quota refuses a new upload once full (${chunked ? 'streamed' : 'declared'}), accepts a stored digest again, and spares other tenants`, async () => {
      const acme = await testTenant(state, 'acme', { maxUploadStoreMb: 2 });
      const other = await testTenant(state, 'other', { maxUploadStoreMb: 2 });
      const first = await upload(acme.apiKey, MiB, 0x61, chunked);
      expect(first.status).toBe(201);
      expect((await upload(acme.apiKey, MiB - 10, 0x62, chunked)).status).toBe(201);
      // 10 bytes left: larger than every stored blob, so refused while streaming.
      const big = await upload(acme.apiKey, MiB + 1, 0x63, chunked);
      expect(big.status).toBe(413);
      expect(big.body.error.code).toBe('QUOTA_UPLOAD_STORE');
      expect(big.body.error.message).toMatch(/tenant 'acme' may keep at most 2097152 bytes of uploads on this host, 2097142 are stored/);
      expect(big.body.error.details).toMatchObject({ quota: 'maxUploadStoreMb', budgetBytes: 2 * MiB, usedBytes: 2 * MiB - 10 });
      // No larger than a stored blob (it might be one of them): read to the end, then refused as new.
      const small = await upload(acme.apiKey, 100, 0x64, chunked);
      expect(small.status).toBe(413);
      expect(small.body.error.code).toBe('QUOTA_UPLOAD_STORE');
      expect(parts()).toEqual([]);
      // The same bytes again cost nothing.
      const again = await upload(acme.apiKey, MiB, 0x61, chunked);
      expect(again.status).toBe(200);
      expect(again.body.digest).toBe(first.body.digest);
      // Another tenant's budget is its own.
      expect((await upload(other.apiKey, MiB, 0x61, chunked)).status).toBe(201);
      expect((await upload(other.apiKey, MiB, 0x65, chunked)).status).toBe(201);
      expect(readdirSync(join(work, 'uploads', 'acme')).length).toBe(2);
    });
  }

  it('without a tenant quota the server default (ZVIZ_MAX_UPLOAD_STORE_MB) is the budget', async () => {
    app = testApp({ uploads: { store, bundles: new Bundles({ uploads: store, cacheDir: join(work, 'cache'), maxBundleBytes: MiB, log: silentLogger }), maxUploadBytes: 4 * MiB, maxStoreBytes: MiB } }, state);
    const t = await testTenant(state);
    expect((await upload(t.apiKey, MiB, 0x61)).status).toBe(201);
    expect((await upload(t.apiKey, 1, 0x62)).body.error.code).toBe('QUOTA_UPLOAD_STORE');
  });

  it('parallel uploads cannot together pass the budget', async () => {
    const t = await testTenant(state, 'acme', { maxUploadStoreMb: 1 });
    const all = await Promise.all([0x61, 0x62, 0x63].map((fill) => upload(t.apiKey, MiB / 2, fill, true)));
    // What the others stream counts while each streams, so which ones pass depends on how they interleave.
    const stored = all.filter((r) => r.status === 201).length;
    expect(all.every((r) => r.status === 201 || r.body.error.code === 'QUOTA_UPLOAD_STORE')).toBe(true);
    expect(stored).toBeLessThanOrEqual(2);
    expect((await store.usage('acme')).bytes).toBe((stored * MiB) / 2);
    expect(parts()).toEqual([]);
  });
});

describe('what the stored-bytes budget counts', () => {
  it('a tiny upload counts as 4 KiB (a file takes an inode and a block): 256 fill a 1 MiB budget', async () => {
    const t = await testTenant(state, 'acme', { maxUploadStoreMb: 1 });
    for (let i = 0; i < 256; i++) {
      const r = await upload(t.apiKey, 1, i);
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    }
    const over = await upload(t.apiKey, 2, 0x61);
    expect([over.status, over.body.error.code]).toEqual([413, 'QUOTA_UPLOAD_STORE']);
    expect(await store.usage('acme')).toMatchObject({ bytes: MiB, blobs: 256 });
  });

  it('a tenant keeps at most so many uploads on a host, however small', async () => {
    store = new UploadStore({ dir: join(work, 'uploads'), remote: null, log: silentLogger, maxBlobsPerTenant: 3 });
    app = testApp({ uploads: { store, bundles: new Bundles({ uploads: store, cacheDir: join(work, 'cache'), maxBundleBytes: MiB, log: silentLogger }), maxUploadBytes: 4 * MiB, maxStoreBytes: 64 * MiB } }, state);
    const t = await testTenant(state);
    for (const fill of [1, 2, 3]) expect((await upload(t.apiKey, 10, fill)).status).toBe(201);
    const fourth = await upload(t.apiKey, 10, 4);
    expect([fourth.status, fourth.body.error.code, fourth.body.error.details]).toEqual([413, 'QUOTA_UPLOAD_STORE', { quota: 'uploads', maxUploads: 3, uploads: 3 }]);
    // The same bytes again are not a new upload.
    expect((await upload(t.apiKey, 10, 1)).status).toBe(200);
    expect(parts()).toEqual([]);
  });

  it('uploads no larger than the largest stored blob are let through to the end only one at a time: parallel ones cannot fill the disk', async () => {
    const t = await testTenant(state, 'acme', { maxUploadStoreMb: 1 });
    expect((await upload(t.apiKey, (3 * MiB) / 4, 0x61)).status).toBe(201);
    // Each is smaller than the stored one, and together they are far over what is left.
    const all = await Promise.all([0x62, 0x63, 0x64, 0x65].map((fill) => upload(t.apiKey, MiB / 2, fill, true)));
    expect(all.map((r) => [r.status, r.body.error?.code])).toEqual(all.map(() => [413, 'QUOTA_UPLOAD_STORE']));
    expect(parts()).toEqual([]);
  });
});

describe('DELETE /uploads/:digest', () => {
  async function del(key: string, digest: string) {
    const r = await app.request(`/uploads/${digest}`, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
    return { status: r.status, body: (await r.json()) as any };
  }

  it("gives the upload's bytes back to the budget", async () => {
    const t = await testTenant(state, 'acme', { maxUploadStoreMb: 1 });
    const first = await upload(t.apiKey, MiB, 0x61);
    expect((await upload(t.apiKey, 10, 0x62)).status).toBe(413);
    const d = await del(t.apiKey, first.body.digest);
    expect(d).toEqual({ status: 200, body: { digest: first.body.digest, size: MiB } });
    expect((await upload(t.apiKey, 10, 0x62)).status).toBe(201);
    const records = await state.auditStore.list({ tenant: 'acme', limit: 10 });
    expect(records.records.map((r) => ('action' in r ? r.action : null))).toContain('upload.delete');
  });

  it("is 404 UNKNOWN_UPLOAD for another tenant's digest, an unknown one or a malformed one", async () => {
    const acme = await testTenant(state, 'acme');
    const other = await testTenant(state, 'other');
    const up = await upload(acme.apiKey, 100, 0x61);
    for (const [key, digest] of [
      [other.apiKey, up.body.digest],
      [acme.apiKey, `sha256:${'0'.repeat(64)}`],
      [acme.apiKey, 'sha256:..'],
    ] as const) {
      const r = await del(key, digest);
      expect(r.status).toBe(404);
      expect(r.body.error.code).toMatch(/^(UNKNOWN_UPLOAD|NOT_FOUND)$/);
    }
    expect(readdirSync(join(work, 'uploads', 'acme')).length).toBe(1);
  });

  it('a held blob is not discarded (the collector), and a hold taken while it is being removed keeps it', async () => {
    const t = await testTenant(state);
    const up = await upload(t.apiKey, 100, 0x61);
    const release = store.hold(t.name, up.body.digest);
    expect(await store.discard(t.name, up.body.digest)).toBe(false);
    release();
    // A hold taken during the removal's rename: the blob comes back.
    const removing = store.discard(t.name, up.body.digest);
    const late = store.hold(t.name, up.body.digest);
    expect(await removing).toBe(false);
    expect(await store.local(t.name, up.body.digest)).not.toBeNull();
    late();
    expect(await store.discard(t.name, up.body.digest)).toBe(true);
  });

  it('is 409 UPLOAD_IN_USE while a job starting from it holds it, and removes it once let go', async () => {
    const t = await testTenant(state);
    const up = await upload(t.apiKey, 100, 0x61);
    const release = store.hold(t.name, up.body.digest);
    const r = await del(t.apiKey, up.body.digest);
    expect([r.status, r.body.error.code]).toEqual([409, 'UPLOAD_IN_USE']);
    expect(r.body.error.message).toContain('a job');
    release();
    expect((await del(t.apiKey, up.body.digest)).status).toBe(200);
  });

  it('is 409 UPLOAD_IN_USE while a stored function version is deployed from it', async () => {
    const t = await testTenant(state);
    const up = await upload(t.apiKey, 100, 0x61);
    state.functions.bundleDigests = async () => new Set([up.body.digest]);
    const r = await del(t.apiKey, up.body.digest);
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('UPLOAD_IN_USE');
  });
});
