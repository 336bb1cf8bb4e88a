import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['server/**/*.test.ts', 'worker-pool/**/*.test.ts', 'profiles/**/*.test.ts', 'test/**/*.test.ts'],
    // Privileged suites start real servers and sandboxes: one file at a time on a small host.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
