// Privileged: a single-use sandbox answers before its teardown. The supervisor sends the
// result as soon as the function's answer and its accounting are complete (a deployed
// function: its bootstrap closed fd 4; inline code: its main process exited and its
// output is at EOF), then kills, reaps and removes the cgroup on its own time, and the
// worker answers before it tears the sandbox down. These tests show that the answer does
// not wait for the runtime's exit, that the teardown still completes under a burst, and
// that the accounting read before the kill is exact.
import { existsSync, readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { NETNS_DIR } from '../worker-pool/host/names.js';
import { hostLeftovers, leftoversNotOfOtherServers, settledLeftovers } from './support/leftovers.js';
import { run } from './support/sandboxes.js';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';
import { pollUntil, timeScale } from './support/wait.js';

/** How long the runtime below keeps running after its answer, burning CPU in its exit. */
const EXIT_SPIN_MS = 4000 * timeScale();

/**
 * A handler whose runtime keeps running after it answered: its `exit` listener spins,
 * then prints a line. A result that waited for the runtime's exit would carry that line
 * and that CPU; one taken at the answer carries neither, and the teardown kills the spin.
 */
const SLOW_EXIT = `
process.on('exit', () => {
  const end = Date.now() + ${EXIT_SPIN_MS};
  while (Date.now() < end);
  process.stdout.write('after the answer\\n');
});
module.exports = async (event) => {
  console.log('before the answer');
  const t0 = process.cpuUsage();
  const until = Date.now() + event.burnMs;
  while (Date.now() < until);
  const used = process.cpuUsage(t0);
  return { n: event.n, burnedMs: (used.user + used.system) / 1000 };
};
`;

/** Named network namespaces of this server's sandboxes. */
function netnsOf(serverPid: number): string[] {
  if (!existsSync(NETNS_DIR)) return [];
  return readdirSync(NETNS_DIR).filter((n) => n.startsWith(`zviz-${serverPid}-`));
}

describe.skipIf(privilegedReason() !== null)('a sandbox answers before its teardown', () => {
  let s: RunningServer;
  let before: string[] = [];

  beforeAll(async () => {
    before = hostLeftovers();
    // No warm pool: every invocation of the burst is a sandbox made, answered and torn down.
    s = await startServer({ env: { ZVIZ_WARM_MAX: '0', ZVIZ_MAX_SANDBOXES: '8' } });
    const put = await s.request('/functions/slow-exit', { method: 'PUT', body: { runtime: 'node', code: SLOW_EXIT } });
    expect(put.status, JSON.stringify(put.body)).toBe(201);
  });
  afterAll(async () => {
    if (s) expect(await s.stop()).toBe(0);
    const left = await settledLeftovers(s ? [s.pid] : [], before);
    expect(left, left.join('\n')).toEqual([]);
  });

  it('a burst of 8 deployed functions is answered before their runtimes exit, and every sandbox is torn down (no cgroup, netns or process left)', async () => {
    const timeoutMs = 3 * EXIT_SPIN_MS;
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, n) => s.invoke({ function: 'slow-exit', input: { n, burnMs: 50 }, limits: { timeoutMs } })),
    );
    for (const [n, r] of replies.entries()) {
      expect(r.status, JSON.stringify(r)).toBe('ok');
      expect(r.output).toMatchObject({ n });
      expect(r.exitCode).toBe(0);
      // What the handler printed before its answer is there; what its exit printed is not.
      expect(r.stdout).toBe('before the answer\n');
      // The exit's spin is not charged: it ran after the result was read, and was killed.
      expect(r.cpuMs).toBeLessThan(EXIT_SPIN_MS / 2);
    }
    // The spins would run for EXIT_SPIN_MS; the teardown kills them and removes the rest.
    // (The server's own `zviz` parent folders stay while it runs.)
    const sandboxesLeft = () => leftoversNotOfOtherServers([s.pid], before).filter((e) => !e.endsWith('/zviz'));
    const left = await pollUntil(sandboxesLeft, (l) => l.length === 0, 3000 * timeScale(), 100);
    expect(left, left.join('\n')).toEqual([]);
    expect(netnsOf(s.pid)).toEqual([]);
  });

  it('a handler that throws is status error with exit code 1 though its runtime had not exited', async () => {
    const put = await s.request('/functions/throws-slowly', {
      method: 'PUT',
      body: { runtime: 'node', code: `${SLOW_EXIT}\nmodule.exports = async () => { throw new Error('nope'); };` },
    });
    expect(put.status).toBe(201);
    const r = await s.invoke({ function: 'throws-slowly', input: {}, limits: { timeoutMs: 3 * EXIT_SPIN_MS } });
    expect(r).toMatchObject({ status: 'error', exitCode: 1 });
    expect(r.error.message).toContain('nope');
  });

  it('cpuMs of a deployed function is at least the CPU it burned before answering', async () => {
    const r = await s.invoke({ function: 'slow-exit', input: { n: 0, burnMs: 400 }, limits: { timeoutMs: 3 * EXIT_SPIN_MS } });
    expect(r.status, JSON.stringify(r)).toBe('ok');
    expect(r.cpuMs).toBeGreaterThanOrEqual(r.output.burnedMs * 0.95);
    expect(r.cpuMs).toBeLessThan(r.output.burnedMs + EXIT_SPIN_MS / 2);
  });

  it('cpuMs of inline code is at least the CPU its process tree counted, read before the kill', async () => {
    const r = await run(s, 'python', `
import os, time
end = time.time() + 0.4
while time.time() < end:
    pass
t = os.times()
print(round((t.user + t.system) * 1000))
`);
    expect(r.status, JSON.stringify(r)).toBe('ok');
    expect(r.cpuMs).toBeGreaterThanOrEqual(Number(r.stdout.trim()) * 0.95);
  });

  it("an allocation past memoryMb is still 'oom' with its OOM kill counted", async () => {
    const r = await run(s, 'python', 'chunks = [b"\\x01" * (10 << 20) for _ in range(40)]\nprint("allocated")', { limits: { memoryMb: 64 } });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 'oom', reason: 'memory' });
    expect(r.oomKills).toBeGreaterThanOrEqual(1);
  });
});
