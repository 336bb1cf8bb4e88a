// Which images collection keeps for the catalog: found as the catalog finds them, under
// either spelling of a registry reference, over a real store folder with records written
// as a pull writes them (no pull, no root).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ImageStore, type ImageRecord } from '../../worker-pool/images/index.js';
import type { Language } from '../../worker-pool/runtime/catalog.js';
import { pinnedByCatalog } from './collection.js';

const dir = mkdtempSync(join(tmpdir(), 'zviz-collection-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function stored(digest: string, references: string[]): void {
  const record: ImageRecord = {
    digest,
    references,
    origin: 'registry',
    pinned: null,
    sizeBytes: 1,
    layers: 1,
    config: { env: [], workingDir: '/', entrypoint: [], cmd: [], user: '' } as unknown as ImageRecord['config'],
    pulledAt: new Date(0).toISOString(),
  };
  const at = join(dir, digest.replace(':', '-'));
  mkdirSync(join(at, 'rootfs'), { recursive: true });
  writeFileSync(join(at, 'image.json'), JSON.stringify(record));
}

const lang = (image: string) => ({ name: 'x', root: { image } }) as unknown as Language;

describe('pinnedByCatalog', () => {
  it("keeps a catalog language's image under either spelling of its reference", () => {
    const a = `sha256:${'a'.repeat(64)}`;
    const b = `sha256:${'b'.repeat(64)}`;
    stored(a, ['docker://docker.io/library/golang:1.22']);
    stored(b, ['docker.io/library/rust:1.75']);
    const images = new ImageStore({ dir, registries: [], insecureRegistries: [], authFile: null, maxImageMb: 1, maxLayers: 1, cacheMb: 1 } as never);
    const pinned = pinnedByCatalog([lang('docker.io/library/golang:1.22'), lang('docker://docker.io/library/rust:1.75'), lang('docker.io/library/none:1')], images);
    expect([...pinned].sort()).toEqual([a, b]);
  });
});
