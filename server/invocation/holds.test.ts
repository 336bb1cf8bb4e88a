// What an invocation runs from (its image) is held from its admission until its lease is
// released, on every path: refused, run to its end, or never run (async, the record not
// stored). With a store that counts its holds, and a fake invoker.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ImageRecord, ImageStore } from '../../worker-pool/images/index.js';
import { FakeInvoker, result, testApp, testState, testTenant } from '../../test/support/fixtures.js';

const DIGEST = `sha256:${'c'.repeat(64)}`;
// The image's tree: just the command the invocations name.
const rootfs = mkdtempSync(join(tmpdir(), 'zviz-holds-'));
mkdirSync(join(rootfs, 'bin'));
writeFileSync(join(rootfs, 'bin', 'true'), '');
chmodSync(join(rootfs, 'bin', 'true'), 0o755);
afterAll(() => rmSync(rootfs, { recursive: true, force: true }));

/** The store's side an invocation of an image uses, with its holds counted. */
function countingImages() {
  const counts = { acquired: 0, released: 0, heldDuringRun: [] as number[] };
  const record = {
    digest: DIGEST,
    references: ['local/tools:1'],
    origin: 'import',
    pinned: null,
    sizeBytes: 1,
    layers: 1,
    config: { env: ['PATH=/bin'], entrypoint: [], cmd: ['sh'], workingDir: '/', user: { uid: 0, gid: 0 } },
    pulledAt: new Date(0).toISOString(),
  } satisfies ImageRecord;
  const images = {
    options: { registries: [] },
    get: (ref: string) => (ref === DIGEST || record.references.includes(ref) ? record : null),
    find: (ref: string) => images.get(ref),
    resolve: (ref: string) => images.get(ref)!,
    rootfs: () => rootfs,
    onEvict: () => undefined,
    onCollected: () => undefined,
    list: () => [record],
    acquire: () => {
      counts.acquired++;
      let done = false;
      return () => {
        if (!done) counts.released++;
        done = true;
      };
    },
  };
  return { images: images as unknown as ImageStore, counts };
}

const body = { image: 'local/tools:1', command: ['true'] };
const json = (b: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(b) });

describe('the image an invocation runs from', () => {
  it('is held from admission through the run, and let go once', async () => {
    const { images, counts } = countingImages();
    const invoker = new FakeInvoker(async () => {
      counts.heldDuringRun.push(counts.acquired - counts.released);
      return { ok: true, result: result() };
    });
    const state = testState();
    const app = testApp({ invoker, images }, state);
    const { auth } = await testTenant(state);
    const res = await app.request('/invoke', { ...json(body), headers: { ...auth, 'content-type': 'application/json' } });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(counts).toEqual({ acquired: 1, released: 1, heldDuringRun: [1] });
  });

  it('is let go when admission refuses it (a quota)', async () => {
    const { images, counts } = countingImages();
    let finish!: () => void;
    const running = new Promise<void>((r) => (finish = r));
    const invoker = new FakeInvoker(async () => {
      await running;
      return { ok: true, result: result() };
    });
    const state = testState();
    const app = testApp({ invoker, images }, state);
    const { auth } = await testTenant(state, 'acme', { concurrency: 1 });
    const request = () => app.request('/invoke', { ...json(body), headers: { ...auth, 'content-type': 'application/json' } });
    const first = request();
    while (invoker.tasks.length === 0) await new Promise((r) => setTimeout(r, 5));
    expect((await request()).status).toBe(429);
    expect([counts.acquired, counts.released]).toEqual([2, 1]); // the refused one's, at once
    finish();
    expect((await first).status).toBe(200);
    expect([counts.acquired, counts.released]).toEqual([2, 2]);
  });

  it('is let go when an async invocation cannot be recorded, and never runs', async () => {
    const { images, counts } = countingImages();
    const invoker = new FakeInvoker();
    const state = testState();
    const app = testApp({ invoker, images }, state);
    const { auth } = await testTenant(state);
    state.results.start = async () => {
      throw new Error('store gone');
    };
    const res = await app.request('/invoke?mode=async', { ...json(body), headers: { ...auth, 'content-type': 'application/json' } });
    expect(res.status).toBeGreaterThanOrEqual(500);
    expect([counts.acquired, counts.released, invoker.tasks.length]).toEqual([1, 1, 0]);
  });
});
