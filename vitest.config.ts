import { defineConfig } from 'vitest/config';
import { timeScale } from './test/support/wait.js';

/** ZVIZ_TEST_TIME_SCALE: a slow machine (the VM job under TCG) gets proportionally longer timeouts. */
const scale = timeScale();

export default defineConfig({
  // worker-pool/threadpool.cts and the entries that load it are CommonJS TypeScript
  // (they must run before libuv's pool starts): transform them like every .ts.
  oxc: { include: /\.([cm]?ts|[jt]sx)$/ },
  test: {
    include: ['server/**/*.test.ts', 'worker-pool/**/*.test.ts', 'profiles/**/*.test.ts', 'test/**/*.test.ts'],
    // Privileged suites start real servers and sandboxes: one file at a time on a small host.
    fileParallelism: false,
    testTimeout: 60_000 * scale,
    hookTimeout: 60_000 * scale,
  },
});
