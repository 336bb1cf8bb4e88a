// Privileged: the CI-sized soak (load-tests/soak.ts --quick) in-process. 300 invocations of
// the mix against a real server; nothing it holds on the host may grow, and every answer must
// be the one its kind expects. The full size is `node dist/load-tests/soak.js`.
import { describe, expect, it } from 'vitest';
import { QUICK, soak } from '../load-tests/soak.js';
import { privilegedReason } from './support/server.js';

describe.skipIf(privilegedReason() !== null)('soak (CI size)', () => {
  it(
    `${QUICK.invocations} invocations of the mix leave no fd, thread, supervisor, cgroup, netns, nft rule, mount or zombie behind, and RSS does not grow`,
    async () => {
      const lines: string[] = [];
      const report = await soak({ ...QUICK, print: (l) => lines.push(l) });
      const failed = report.verdicts.filter((v) => v.grows).map((v) => `${v.metric}: ${v.why}`);
      expect(report.wrong, lines.join('\n')).toEqual([]);
      expect(failed, lines.join('\n')).toEqual([]);
      expect(report.serverExit).toBe(0);
      expect(report.ok).toBe(true);
    },
    10 * 60_000,
  );
});
