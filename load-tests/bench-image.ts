// Issue 14's image target: starting a sandbox from a cached OCI image must cost no more
// than starting one on the host's /usr (within 10%), printed as a ratio measured in the
// same loop (the order alternates every iteration), beside the first pull + unpack time of
// the image into an empty store. The image is busybox-static written by hand
// (test/support/oci-images.ts); both sandboxes run `true` under the default profile with
// every layer on.
//
//   node dist/load-tests/bench-image.js [--quick]        (root; after npm run build)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageStore } from '../worker-pool/images/store.js';
import { supervisorPath } from '../worker-pool/native.js';
import { imageTask } from '../worker-pool/task.js';
import type { HostLayout } from '../worker-pool/spec.js';
import { busyboxLayer, writeOciLayout } from '../test/support/oci-images.js';
import { defaultProfile, newSamples, oneSandbox, openBenchHost, trueTask } from './bench-cold.js';
import { fmt, summarize } from './bench-util.js';

const quick = process.argv.includes('--quick');
const N = quick ? 60 : 300;
const WARMUP = quick ? 5 : 20;
const PULLS = quick ? 2 : 5;

function newStore(dir: string): ImageStore {
  return new ImageStore({ dir, registries: [], insecureRegistries: [], authFile: null, maxImageMb: 512, maxLayers: 16, cacheMb: 10_240, supervisor: supervisorPath() });
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench-image needs root');
  const work = mkdtempSync(join(tmpdir(), 'zviz-bench-image-'));
  const opened = openBenchHost();
  try {
    const layout = join(work, 'busybox');
    writeOciLayout(layout, 'latest', [busyboxLayer()], { Env: ['PATH=/bin'] });
    // First pull + unpack: a fresh store each time (skopeo copy, umoci unpack, sanitize, rename).
    const pulls: number[] = [];
    let store = newStore(join(work, 'store-0'));
    for (let i = 0; i < PULLS; i++) {
      store = newStore(join(work, `store-${i}`));
      const t0 = performance.now();
      await store.pull(`oci:${layout}:latest`);
      pulls.push(performance.now() - t0);
    }
    const record = (await store.pull(`oci:${layout}:latest`));
    const profile = defaultProfile();
    const limits = { ...profile.limits.defaults, outputBytes: 4096 };
    const image = imageTask({
      id: 'bench-image',
      image: { ...record.config, digest: record.digest, rootfs: store.rootfs(record.digest) },
      command: ['/bin/true'],
      limits,
      profile,
    });
    const hostTask = trueTask(profile);
    const host: HostLayout = { ...opened.layout, network: null };
    const onHost = newSamples();
    const fromImage = newSamples();
    const pid = process.pid;
    for (let i = 0; i < WARMUP + N; i++) {
      const keep = i >= WARMUP;
      const runs = [
        () => oneSandbox(hostTask, host, `${pid}-bench-usr-${i}`, keep ? onHost : null),
        () => oneSandbox(image, host, `${pid}-bench-img-${i}`, keep ? fromImage : null),
      ];
      if (i % 2 === 1) runs.reverse();
      for (const r of runs) r();
    }
    const u = summarize(onHost.total);
    const m = summarize(fromImage.total);
    const p = summarize(pulls);
    const ratio = m.p50 / u.p50;
    console.log(`image root vs host /usr, ${N} sandboxes each (spawn + run of true + release, default profile, all layers)`);
    console.log(`  host /usr     p50 ${fmt(u.p50)} ms  p99 ${fmt(u.p99)} ms  (spawn p50 ${fmt(summarize(onHost.spawn).p50)} ms)`);
    console.log(`  cached image  p50 ${fmt(m.p50)} ms  p99 ${fmt(m.p99)} ms  (spawn p50 ${fmt(summarize(fromImage.spawn).p50)} ms)`);
    console.log(`  ratio image / host p50: ${ratio.toFixed(3)}  (target <= 1.10: ${ratio <= 1.1 ? 'met' : 'missed'})`);
    console.log(`first pull + unpack of busybox (${(record.sizeBytes / 1048576).toFixed(1)} MiB unpacked, from an OCI layout), ${PULLS} runs: p50 ${fmt(p.p50)} ms, max ${fmt(p.max)} ms`);
  } finally {
    opened.close();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
