// The catalog's languages through POST /invoke, up to the tasks the pool is given: a
// language without a compile step is one sandbox; a compiled one is two, the run step
// made from the compile step's stdout, and none when the compile step fails.
import { describe, expect, it } from 'vitest';
import { FakeInvoker, result, testApp, testState, testTenant } from '../../test/support/fixtures.js';
import { ApiError } from '../http/errors.js';
import { languageSchema, loadCatalog, type Language } from '../../worker-pool/runtime/catalog.js';

const shipped = loadCatalog();
const ruby: Language = languageSchema.parse({ name: 'ruby', version: '3', root: 'host', source: 'main.rb', syscalls: 'bash', run: { argv: ['/usr/bin/ruby', '{source}'] } });
const lua: Language = languageSchema.parse({
  name: 'lua',
  version: '5',
  root: 'host',
  source: 'main.lua',
  syscalls: 'bash',
  run: { argv: ['/usr/bin/lua', '{source}'], limits: { timeoutMs: 700, memoryMb: 65_536 } },
});
const languages = new Map<string, Language>([...shipped, ['ruby', ruby], ['lua', lua]]);

async function invoke(invoker: FakeInvoker, body: unknown, state = testState()) {
  const app = testApp({ invoker, languages }, state);
  const { auth } = await testTenant(state);
  const r = await app.request('/invoke', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as Record<string, any> };
}

describe('catalog languages in POST /invoke', () => {
  it('a language without a compile step runs its argv over the source file, in one sandbox', async () => {
    const inv = new FakeInvoker();
    const r = await invoke(inv, { runtime: 'ruby', code: 'puts 1', args: ['a'] });
    expect(r.status).toBe(200);
    expect(inv.tasks).toHaveLength(1);
    expect(inv.tasks[0]!.argv).toEqual(['/usr/bin/ruby', '/fn/main.rb', 'a']);
    expect(inv.tasks[0]!.files).toEqual([{ name: 'main.rb', content: 'puts 1' }]);
    expect(r.body.compile).toBeUndefined();
  });

  it("a definition's run limits are the run step's defaults, lowered to the profile's max, under the request's", async () => {
    const inv = new FakeInvoker();
    await invoke(inv, { runtime: 'lua', code: 'print(1)' });
    await invoke(inv, { runtime: 'lua', code: 'print(1)', limits: { timeoutMs: 900 } });
    await invoke(inv, { runtime: 'ruby', code: 'puts 1' });
    const [byDefinition, byRequest, byProfile] = inv.tasks;
    expect(byDefinition!.limits.timeoutMs).toBe(700);
    expect(byDefinition!.limits.memoryMb).toBeLessThan(65_536); // the profile's max
    expect(byRequest!.limits.timeoutMs).toBe(900);
    expect(byProfile!.limits.timeoutMs).not.toBe(700);
  });

  it('a compiled language: the compile sandbox gets the source, the run sandbox the artifact and exec on /tmp', async () => {
    const inv = new FakeInvoker(async (task) => ({ ok: true, result: result(task.id.endsWith('-compile') ? { stdout: 'QUJD' } : { stdout: 'ran' }) }));
    const r = await invoke(inv, { runtime: 'cpp', code: 'int main(){}', limits: { timeoutMs: 1000 } });
    expect(r.body.status).toBe('ok');
    expect(inv.tasks.map((t) => t.id.endsWith('-compile'))).toEqual([true, false]);
    const [compile, run] = inv.tasks;
    expect(compile!.files).toEqual([{ name: 'main.cpp', content: 'int main(){}' }]);
    expect(compile!.limits.timeoutMs).toBe(15000);
    expect(compile!.profile.filesystem.tmpExec).toBe(false);
    expect(run!.files).toEqual([{ name: '.zviz/program.b64', content: 'QUJD' }]);
    expect(run!.limits.timeoutMs).toBe(1000);
    expect(run!.profile.filesystem.tmpExec).toBe(true);
    expect(r.body.stdout).toBe('ran');
    expect(r.body.compile).toMatchObject({ status: 'ok', limits: { timeoutMs: 15000 } });
    expect(inv.tasks.map((t) => t.language)).toEqual(['cpp', 'cpp']);
  });

  it('chargedCpuMs is what the quota was charged: the run step and the compile step, each with its trusted-side CPU', async () => {
    const inv = new FakeInvoker(async (task) => ({
      ok: true,
      result: result(task.id.endsWith('-compile') ? { stdout: 'QUJD', cpuMs: 300.04, brokerCpuMs: 1.2 } : { cpuMs: 20.01, brokerCpuMs: 0.5 }),
    }));
    const state = testState();
    const r = await invoke(inv, { runtime: 'cpp', code: 'int main(){}' }, state);
    expect(r.body).toMatchObject({ status: 'ok', cpuMs: 20, brokerCpuMs: 0.5, chargedCpuMs: 321.7, compile: { cpuMs: 300, brokerCpuMs: 1.2 } });
    expect(state.quotas.released.map((x) => x.cpuMs)).toEqual([321.7]);
    // A compile error's figures are the compile step's own, and so is its charge.
    const failed = new FakeInvoker(async () => ({ ok: true, result: result({ exitCode: 1, cpuMs: 40, brokerCpuMs: 2 }) }));
    const state2 = testState();
    const e = await invoke(failed, { runtime: 'cpp', code: 'x' }, state2);
    expect(e.body).toMatchObject({ status: 'compile_error', cpuMs: 40, brokerCpuMs: 2, chargedCpuMs: 42 });
    expect(state2.quotas.released.map((x) => x.cpuMs)).toEqual([42]);
  });

  it.each([
    ['no run sandbox could be made', async () => ({ ok: false as const, error: { code: 'CGROUP' as const, errno: 12, message: 'mkdir: Cannot allocate memory' } })],
    ['the queue was full', () => Promise.reject(new ApiError('OVERLOADED', 'Cannot queue invocation: queue is full'))],
  ])('a run step refused with a 503 after its compile step ran (%s) is 502 SANDBOX_FAILED: the compile is charged, never a retryable 503', async (_why, runStep) => {
    const inv = new FakeInvoker(async (task) => (task.id.endsWith('-compile') ? { ok: true, result: result({ stdout: 'QUJD', cpuMs: 300 }) } : runStep()));
    const state = testState();
    const r = await invoke(inv, { runtime: 'cpp', code: 'int main(){}' }, state);
    expect(r.status).toBe(502);
    expect(r.body.error).toMatchObject({ code: 'SANDBOX_FAILED', details: { after: 'compile' } });
    expect(state.quotas.released.map((x) => x.cpuMs)).toEqual([300]);
  });

  it('a compile step that could not be made at all is 503 SANDBOX_UNAVAILABLE: nothing ran', async () => {
    const inv = new FakeInvoker(async () => ({ ok: false, error: { code: 'CGROUP', errno: 12, message: 'mkdir: Cannot allocate memory' } }));
    const r = await invoke(inv, { runtime: 'cpp', code: 'int main(){}' });
    expect([r.status, r.body.error.code, inv.tasks.length]).toEqual([503, 'SANDBOX_UNAVAILABLE', 1]);
  });

  it('a failed compile step is compile_error with its stderr, and no run sandbox is made', async () => {
    const inv = new FakeInvoker(async () => ({ ok: true, result: result({ exitCode: 1, stderr: 'main.cpp:1: error: nope', stdout: '' }) }));
    const r = await invoke(inv, { runtime: 'cpp', code: 'x' });
    expect(inv.tasks).toHaveLength(1);
    expect(r.body).toMatchObject({ status: 'compile_error', reason: null, stderr: 'main.cpp:1: error: nope', stdout: '' });
  });

  it('a compile step stopped by its timeout is compile_error with reason timeout', async () => {
    const inv = new FakeInvoker(async () => ({ ok: true, result: result({ exitCode: null, signal: 'SIGKILL', timedOut: true }) }));
    const r = await invoke(inv, { runtime: 'c', code: 'x', compileLimits: { timeoutMs: 10 } });
    expect(r.body).toMatchObject({ status: 'compile_error', reason: 'timeout', compile: { limits: { timeoutMs: 10 } } });
  });
});
