// Layer E's pool of /31 pairs is shared host-wide through lock files (claimIndex in
// worker-pool/network.ts): every worker thread of every server on the host claims from the
// same directory. This suite races real processes against one private lock directory — no
// root, no network — and checks that a claim never fails while a pair is free and that no
// pair is ever held by two claimants at once.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { repoRoot } from './support/server.js';

const networkModule = join(repoRoot, 'dist', 'worker-pool', 'network', 'address-pool.js');
const skipReason = existsSync(networkModule) ? null : `${networkModule} missing: run \`npx tsc -p tsconfig.build.json\``;

/**
 * One claimant: `rounds` times, claim a pair, check the lock file still names this process
 * (else someone else was handed the same pair), release it. Prints its tallies as JSON.
 */
const CLAIMANT = `
import { claimIndex } from ${JSON.stringify(networkModule)};
import { readFileSync, unlinkSync } from 'node:fs';
const [lockDir, rounds] = [process.argv[1], Number(process.argv[2])];
const host = { routerNetns: null, pool: '10.199.0.0/30', uplink: null, lockDir };
const out = { claims: 0, errors: {}, sharedPairs: 0 };
for (let r = 0; r < rounds; r++) {
  let i;
  try {
    i = claimIndex(host, r);
  } catch (e) {
    const key = e.code ?? e.message;
    out.errors[key] = (out.errors[key] ?? 0) + 1;
    continue;
  }
  out.claims++;
  let owner = '';
  try {
    owner = readFileSync(lockDir + '/' + i, 'utf8');
  } catch {}
  if (owner !== String(process.pid)) out.sharedPairs++;
  else unlinkSync(lockDir + '/' + i);
}
console.log(JSON.stringify(out));
`;

interface Tally {
  claims: number;
  errors: Record<string, number>;
  sharedPairs: number;
}

function claimant(lockDir: string, rounds: number): Promise<Tally> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', CLAIMANT, lockDir, String(rounds)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', rej);
    child.on('exit', (code) => (code === 0 ? res(JSON.parse(out) as Tally) : rej(new Error(`claimant exited ${code}: ${err}`))));
  });
}

describe.skipIf(skipReason !== null)(`layer E: /31 pair claims across processes${skipReason ? ` [skipped: ${skipReason}]` : ''}`, () => {
  test('two claimants taking turns on a two-pair pool always get a pair, and never the same one', async () => {
    // Each claimant holds at most one pair at a time, so one of the two is always free.
    const lockDir = mkdtempSync(join(tmpdir(), 'nettest-claims-'));
    try {
      const tallies = await Promise.all([claimant(lockDir, 3000), claimant(lockDir, 3000)]);
      const errors: Record<string, number> = {};
      for (const t of tallies) for (const [k, n] of Object.entries(t.errors)) errors[k] = (errors[k] ?? 0) + n;
      const shared = tallies.reduce((n, t) => n + t.sharedPairs, 0);
      // ENOENT: the lock file was released between "exists" and reading its owner.
      // "exhausted": both pairs looked taken at some instant of one scan.
      expect.soft(errors, 'claims that failed while a pair was free').toEqual({});
      // An O_EXCL lock file is empty until its pid is written; a claimant reading it then
      // takes it for a dead owner's, deletes it and claims the pair again.
      expect.soft(shared, 'claims whose lock file named another claimant right after claimIndex returned').toBe(0);
    } finally {
      rmSync(lockDir, { recursive: true, force: true });
    }
  });
});
