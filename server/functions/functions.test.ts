// Deployed functions through the app, with in-memory stores and a fake invoker: the deploy
// contract and its caps, versions, tenant scoping, and the task an invocation becomes.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../http/errors.js';
import { FUNCTION_VERSIONS_KEPT, MAX_FUNCTION_CODE_BYTES, MAX_FUNCTION_FILES } from './deploy.js';
import { canonicalJson } from './store.js';
import { MAX_BROKERED_FILE_BYTES } from '../../worker-pool/spec.js';
import { FakeInvoker, result, testState, testTenant, testApp } from '../../test/support/fixtures.js';

const JSON_TYPE = { 'content-type': 'application/json' };
const secretsDir = mkdtempSync(join(tmpdir(), 'zviz-secrets-'));
afterAll(() => rmSync(secretsDir, { recursive: true, force: true }));

async function setup(invoker = new FakeInvoker()) {
  const state = testState();
  const app = testApp({ invoker, secretsDir }, state);
  const acme = await testTenant(state, 'acme');
  const other = await testTenant(state, 'other');
  const call = (method: string, path: string, body?: unknown, auth = acme.auth) =>
    app.request(path, { method, headers: { ...auth, ...(body === undefined ? {} : JSON_TYPE) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  return { app, state, invoker, acme, other, call };
}

const hello = { runtime: 'node', code: 'module.exports = async (e) => ({ hi: e.name })' };

describe('PUT /functions/:name validates the deploy in the one error shape', () => {
  const cases: Array<{ name: string; fn?: string; body: unknown; status: number; code: ErrorCode; path?: string; message?: RegExp }> = [
    { name: 'a name with capitals', fn: 'Hello', body: hello, status: 400, code: 'VALIDATION_FAILED', message: /function name/ },
    { name: 'a name starting with a digit', fn: '1x', body: hello, status: 400, code: 'VALIDATION_FAILED' },
    { name: 'a name of 64 characters', fn: `a${'b'.repeat(63)}`, body: hello, status: 400, code: 'VALIDATION_FAILED' },
    { name: 'neither code nor files', body: { runtime: 'node' }, status: 400, code: 'VALIDATION_FAILED', path: 'code' },
    { name: 'both code and files', body: { ...hello, files: { 'main.js': 'x' } }, status: 400, code: 'VALIDATION_FAILED', path: 'files' },
    { name: 'an unknown field', body: { ...hello, memory: 5 }, status: 400, code: 'VALIDATION_FAILED', path: 'memory' },
    { name: "a path with '..'", body: { runtime: 'node', files: { 'main.js': '', '../x.js': '' } }, status: 400, code: 'VALIDATION_FAILED', path: 'files["../x.js"]' },
    { name: 'an absolute path', body: { runtime: 'node', files: { 'main.js': '', '/etc/x': '' } }, status: 400, code: 'VALIDATION_FAILED' },
    { name: 'a non-canonical path', body: { runtime: 'node', files: { 'main.js': '', 'lib//x.js': '' } }, status: 400, code: 'VALIDATION_FAILED' },
    { name: "a path into the bootstrap's .zviz", body: { runtime: 'node', files: { 'main.js': '', '.zviz/bootstrap-node.js': '' } }, status: 400, code: 'VALIDATION_FAILED' },
    { name: 'a path nine levels deep', body: { runtime: 'node', files: { 'main.js': '', 'a/b/c/d/e/f/g/h/i.js': '' } }, status: 400, code: 'VALIDATION_FAILED', message: /8 levels/ },
    { name: 'a file that is also a directory', body: { runtime: 'node', files: { 'main.js': '', lib: '', 'lib/x.js': '' } }, status: 400, code: 'VALIDATION_FAILED', message: /inside 'lib', which is a file/ },
    { name: '__proto__ as a path', body: '{"runtime":"node","files":{"main.js":"","__proto__":"x"}}', status: 400, code: 'VALIDATION_FAILED', message: /reserved/ },
    {
      name: `more than ${MAX_FUNCTION_FILES} files`,
      body: { runtime: 'node', files: Object.fromEntries([['main.js', ''], ...Array.from({ length: MAX_FUNCTION_FILES }, (_, i) => [`f${i}.js`, ''])]) },
      status: 400,
      code: 'VALIDATION_FAILED',
      message: new RegExp(`at most ${MAX_FUNCTION_FILES} files`),
    },
    { name: 'files without the default handler', body: { runtime: 'python', files: { 'app.py': '' } }, status: 400, code: 'VALIDATION_FAILED', path: 'handler', message: /main\.py/ },
    { name: 'a handler that is not among the files', body: { runtime: 'node', files: { 'a.js': '' }, handler: 'b.js' }, status: 400, code: 'VALIDATION_FAILED', path: 'handler' },
    { name: 'a node handler that is not a module', body: { runtime: 'node', files: { 'a.py': '' }, handler: 'a.py' }, status: 400, code: 'VALIDATION_FAILED', path: 'handler' },
    { name: 'a secret at a relative path', body: { ...hello, secrets: { 'run/db': 'db' } }, status: 400, code: 'VALIDATION_FAILED' },
    { name: "a secret path with '..'", body: { ...hello, secrets: { '/run/../etc/shadow': 'db' } }, status: 400, code: 'VALIDATION_FAILED' },
    { name: 'a secret name that is a path', body: { ...hello, secrets: { '/run/secrets/db': '../../etc/shadow' } }, status: 400, code: 'VALIDATION_FAILED', path: 'secrets["/run/secrets/db"]' },
    { name: "a secret named '..'", body: { ...hello, secrets: { '/run/secrets/db': '..' } }, status: 400, code: 'VALIDATION_FAILED' },
    { name: 'an env key starting with a digit', body: { ...hello, env: { '1X': 'y' } }, status: 400, code: 'VALIDATION_FAILED' },
    {
      name: `files over ${MAX_FUNCTION_CODE_BYTES} bytes in total`,
      body: { runtime: 'node', files: { 'main.js': 'x'.repeat(MAX_FUNCTION_CODE_BYTES / 2), 'b.js': 'é'.repeat(MAX_FUNCTION_CODE_BYTES / 4 + 1) } },
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
      message: /at most 1048576 bytes of UTF-8: current total is 1048578 bytes/,
    },
    { name: 'an unknown profile', body: { ...hello, profile: 'gpu' }, status: 404, code: 'UNKNOWN_PROFILE' },
    { name: 'a runtime the profile does not allow', body: { runtime: 'bash', code: 'echo', profile: 'node-only' }, status: 400, code: 'RUNTIME_NOT_ALLOWED' },
    { name: 'limits above the profile', body: { ...hello, limits: { memoryMb: 4096 } }, status: 400, code: 'LIMIT_EXCEEDS_PROFILE' },
    { name: 'reuse for bash', body: { runtime: 'bash', code: 'echo', reuse: {} }, status: 400, code: 'VALIDATION_FAILED', path: 'reuse', message: /one process per invocation/ },
    { name: 'reuse that is neither never nor a policy', body: { ...hello, reuse: 'always' }, status: 400, code: 'VALIDATION_FAILED', path: 'reuse' },
    { name: 'reuse with maxInvocations 0', body: { ...hello, reuse: { maxInvocations: 0 } }, status: 400, code: 'VALIDATION_FAILED', path: 'reuse.maxInvocations' },
    { name: 'reuse with idleMs below a second', body: { ...hello, reuse: { idleMs: 10 } }, status: 400, code: 'VALIDATION_FAILED', path: 'reuse.idleMs' },
    { name: 'reuse with an unknown reset', body: { ...hello, reuse: { reset: 'all' } }, status: 400, code: 'VALIDATION_FAILED', path: 'reuse' },
  ];

  it.each(cases)('$name is $code', async ({ fn, body, status, code, path, message }) => {
    const { app, acme } = await setup();
    const res = await app.request(`/functions/${fn ?? 'f'}`, {
      method: 'PUT',
      headers: { ...acme.auth, ...JSON_TYPE },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    expect(res.status).toBe(status);
    const json = (await res.json()) as { error: { code: string; message: string; details?: Array<{ path: string }> } };
    expect(json.error.code).toBe(code);
    expect(json.error.message).not.toMatch(/\.$/);
    if (message) expect(json.error.message).toMatch(message);
    if (path) expect(json.error.details?.map((d) => d.path)).toContain(path);
  });

  it('needs a tenant key', async () => {
    const { call } = await setup();
    expect((await call('PUT', '/functions/f', hello, {})).status).toBe(401);
    expect((await call('GET', '/functions', undefined, {})).status).toBe(401);
  });
});

describe('deployed functions: versions and tenants', () => {
  it('PUT answers 201 with version 1, then 2; GET shows the latest with its code size, not the code', async () => {
    const { call } = await setup();
    const first = await call('PUT', '/functions/hello', hello);
    expect(first.status).toBe(201);
    expect(await first.json()).toMatchObject({ name: 'hello', version: 1, runtime: 'node', handler: 'main.js', profile: 'default', files: ['main.js'] });
    const second = await call('PUT', '/functions/hello', { runtime: 'python', files: { 'main.py': 'def handler(e, c): return 2', 'lib/util.py': 'X = 1' }, limits: { timeoutMs: 1000 } });
    const meta = (await second.json()) as Record<string, unknown>;
    expect(meta).toMatchObject({ version: 2, runtime: 'python', handler: 'main.py', files: ['lib/util.py', 'main.py'], codeBytes: 32, limits: { timeoutMs: 1000 } });
    const got = (await (await call('GET', '/functions/hello')).json()) as Record<string, unknown>;
    expect(got).toEqual(meta);
    expect(JSON.stringify(got)).not.toContain('def handler');
    const list = (await (await call('GET', '/functions')).json()) as { functions: Array<{ name: string; version: number }> };
    expect(list.functions.map((f) => [f.name, f.version])).toEqual([['hello', 2]]);
  });

  it("another tenant's key gets 404 for GET, DELETE and invoke, and sees none of them listed", async () => {
    const { call, other, invoker } = await setup();
    await call('PUT', '/functions/hello', hello);
    for (const [method, path, body] of [
      ['GET', '/functions/hello', undefined],
      ['DELETE', '/functions/hello', undefined],
      ['POST', '/invoke', { function: 'hello', input: 1 }],
    ] as const) {
      const res = await call(method, path, body, other.auth);
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('UNKNOWN_FUNCTION');
    }
    expect(await (await call('GET', '/functions', undefined, other.auth)).json()).toEqual({ functions: [] });
    expect(invoker.tasks).toHaveLength(0);
    expect((await call('GET', '/functions/hello')).status).toBe(200);
  });

  it('DELETE answers 204, then GET and invoke are 404; a new deploy continues the version numbers', async () => {
    const { call } = await setup();
    await call('PUT', '/functions/hello', hello);
    await call('PUT', '/functions/hello', hello);
    const del = await call('DELETE', '/functions/hello');
    expect(del.status).toBe(204);
    expect(await del.text()).toBe('');
    expect((await call('GET', '/functions/hello')).status).toBe(404);
    expect((await call('POST', '/invoke', { function: 'hello' })).status).toBe(404);
    expect((await call('DELETE', '/functions/hello')).status).toBe(404);
    // A warm sandbox of the deleted version 1 must never serve a new version 1.
    expect(await (await call('PUT', '/functions/hello', hello)).json()).toMatchObject({ version: 3 });
  });

  it('each deploy is audited with its version and digest', async () => {
    const { call, state } = await setup();
    await call('PUT', '/functions/hello', hello);
    await call('DELETE', '/functions/hello');
    const records = state.auditStore.records.filter((r) => r.type === 'function');
    expect(records).toEqual([
      expect.objectContaining({ tenant: 'acme', action: 'function.deploy', function: 'hello', version: 1, digest: expect.stringMatching(/^[0-9a-f]{64}$/) }),
      expect.objectContaining({ tenant: 'acme', action: 'function.delete', function: 'hello', version: 1 }),
    ]);
  });
});

describe('reuse of deployed functions', () => {
  it('stores the policy with its defaults, keeps "never" out of the version, and keys environments by version, profile and limits', async () => {
    const { call, invoker } = await setup();
    expect((await call('PUT', '/functions/plain', { ...hello, reuse: 'never' })).status).toBe(201);
    expect(await (await call('GET', '/functions/plain')).json()).not.toHaveProperty('reuse');
    const put = await call('PUT', '/functions/kept', { ...hello, reuse: { maxInvocations: 5 } });
    expect(put.status).toBe(201);
    expect(((await put.json()) as { reuse: unknown }).reuse).toEqual({ maxInvocations: 5, idleMs: 60000, reset: 'tmp' });
    await call('POST', '/invoke', { function: 'plain', input: 1 });
    await call('POST', '/invoke', { function: 'kept', input: 1 });
    expect(invoker.tasks[0]!.reuse).toBeUndefined();
    const task = invoker.tasks[1]!;
    expect(task.reuse).toMatchObject({ maxInvocations: 5, idleMs: 60000, reset: 'tmp', owner: { tenant: 'acme', function: 'kept', version: 1 } });
    expect(task.reuse!.key).toMatch(/^env:acme:kept:1:default:/);
    expect(task.reuse!.template.argv).toEqual(['/usr/bin/node', '/fn/.zviz/bootstrap-node.js', 'serve', '/fn/main.js']);
    // The single-use warm template is unchanged: a cold start runs the handler mode.
    expect(task.argv).toEqual(['/usr/bin/node', '/fn/.zviz/bootstrap-node.js', 'handler', '/fn/main.js']);
  });
});

describe('POST /invoke with a deployed function', () => {
  it('runs the latest version through its bootstrap: template argv, env and files, the event and context as control', async () => {
    const { call, invoker } = await setup();
    await call('PUT', '/functions/hello', { ...hello, env: { GREETING: 'hi' } });
    await call('PUT', '/functions/hello', { runtime: 'node', files: { 'main.js': 'v2', 'lib/x.js': 'x' }, env: { GREETING: 'hey' } });
    const res = await call('POST', '/invoke', { function: 'hello', input: { name: 'Ada' } });
    expect(res.status).toBe(200);
    const task = invoker.tasks[0]!;
    expect(task.warm).toMatchObject({ key: 'fn:acme:hello:2:default', handler: true });
    expect(task.argv).toEqual(['/usr/bin/node', '/fn/.zviz/bootstrap-node.js', 'handler', '/fn/main.js']);
    expect(task.argv).toEqual(task.warm!.template.argv);
    expect(task.files).toEqual(task.warm!.template.files);
    expect(task.files.map((f) => f.name)).toEqual(['main.js', 'lib/x.js', '.zviz/bootstrap-node.js']);
    expect(task.files[0]!.content).toBe('v2');
    expect(task.env).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8', GREETING: 'hey' });
    expect(task.stdin).toBe('');
    const control = JSON.parse(task.warm!.control) as { event: unknown; context: Record<string, unknown> };
    expect(control.event).toEqual({ name: 'Ada' });
    expect(control.context).toEqual({ invocationId: task.id, function: 'hello', version: 2, tenant: 'acme', deadlineMs: expect.any(Number) });
  });

  it.each([
    ['redeployed', 200],
    ['deleted', 404],
  ] as const)('a function %s between reading its latest version and admission never runs the version before (%i)', async (change, status) => {
    const { call, invoker, state } = await setup();
    await call('PUT', '/functions/hello', { runtime: 'node', code: 'v1' });
    // Nothing remembered yet: the invocation reads the store, and the change lands right after.
    const latest = state.functions.latest.bind(state.functions);
    let changed = false;
    state.functions.latest = async (tenant, name) => {
      const v = await latest(tenant, name);
      if (!changed) {
        changed = true;
        const res = change === 'redeployed' ? await call('PUT', '/functions/hello', { runtime: 'node', code: 'v2' }) : await call('DELETE', '/functions/hello');
        expect(res.status).toBeLessThan(300);
      }
      return v;
    };
    const res = await call('POST', '/invoke', { function: 'hello' });
    expect(res.status).toBe(status);
    expect(invoker.tasks.map((t) => t.files[0]!.content)).toEqual(change === 'redeployed' ? ['v2'] : []);
  });

  it('pins a version, and refuses one that does not exist or is no longer kept', async () => {
    const { call, invoker } = await setup();
    for (let i = 0; i < FUNCTION_VERSIONS_KEPT + 1; i++) await call('PUT', '/functions/hello', { runtime: 'node', code: `v${i + 1}` });
    const latest = FUNCTION_VERSIONS_KEPT + 1;
    expect((await call('POST', '/invoke', { function: 'hello', version: 2 })).status).toBe(200);
    expect(invoker.tasks[0]!.files[0]!.content).toBe('v2');
    for (const v of [1, latest + 1]) {
      const res = await call('POST', '/invoke', { function: 'hello', version: v });
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(new RegExp(`version ${v} of function 'hello'.*latest is ${latest}`));
    }
  });

  it('bash gets the event JSON on stdin; limits come from the request over the deploy over the profile', async () => {
    const { call, invoker } = await setup();
    await call('PUT', '/functions/sh', { runtime: 'bash', code: 'cat', limits: { timeoutMs: 1000, pids: 8 } });
    await call('POST', '/invoke', { function: 'sh', input: { a: [1, 'x'] }, limits: { pids: 4 } });
    const task = invoker.tasks[0]!;
    expect(task.stdin).toBe('{"a":[1,"x"]}');
    expect(task.warm!.control).toBe('');
    expect(task.limits).toEqual({ timeoutMs: 1000, memoryMb: 256, pids: 4, cpus: 1, outputBytes: 1048576 });
  });

  it('a profile named at invoke must allow the runtime and holds the limits', async () => {
    const { call } = await setup();
    await call('PUT', '/functions/sh', { runtime: 'bash', code: 'cat', limits: { memoryMb: 512 } });
    const wrongRuntime = await call('POST', '/invoke', { function: 'sh', profile: 'node-only' });
    expect(((await wrongRuntime.json()) as { error: { code: string } }).error.code).toBe('RUNTIME_NOT_ALLOWED');
    const tooBig = await call('POST', '/invoke', { function: 'sh', profile: 'minimal' });
    expect(((await tooBig.json()) as { error: { code: string } }).error.code).toBe('LIMIT_EXCEEDS_PROFILE');
  });

  it('answers the handler output, or its error with status error', async () => {
    const outputs = [
      { reply: '{"ok":true,"output":{"hi":"Ada"}}', exitCode: 0 },
      { reply: '{"ok":false,"error":{"message":"Error: boom","stack":"Error: boom\\n    at x"}}', exitCode: 1 },
      { reply: 'not json', exitCode: 0 },
    ];
    let i = 0;
    const { call } = await setup(new FakeInvoker(async () => ({ ok: true, result: result({ ...outputs[i++]!, stdout: '' }) })));
    await call('PUT', '/functions/hello', hello);
    const answers = [];
    for (let n = 0; n < outputs.length; n++) answers.push((await (await call('POST', '/invoke', { function: 'hello' })).json()) as Record<string, unknown>);
    expect(answers[0]).toMatchObject({ status: 'ok', function: 'hello', version: 1, output: { hi: 'Ada' }, error: null });
    expect(answers[1]).toMatchObject({ status: 'error', output: null, error: { message: 'Error: boom', stack: 'Error: boom\n    at x' } });
    expect(answers[2]).toMatchObject({ status: 'error', output: null, error: { message: expect.stringMatching(/not JSON/), stack: null } });
  });

  it('a result taken at the answer (runtime still exiting) reports the bootstrap\'s exit code: 0 after ok, 1 after an error', async () => {
    const outputs = [
      { reply: '{"ok":true,"output":1}', exitCode: 0, answered: true },
      { reply: '{"ok":false,"error":{"message":"Error: boom","stack":null}}', exitCode: 0, answered: true },
    ];
    let i = 0;
    const { call } = await setup(new FakeInvoker(async () => ({ ok: true, result: result({ ...outputs[i++]!, stdout: '' }) })));
    await call('PUT', '/functions/hello', hello);
    const ok = (await (await call('POST', '/invoke', { function: 'hello' })).json()) as Record<string, unknown>;
    const failed = (await (await call('POST', '/invoke', { function: 'hello' })).json()) as Record<string, unknown>;
    expect(ok).toMatchObject({ status: 'ok', exitCode: 0, output: 1, error: null });
    expect(failed).toMatchObject({ status: 'error', exitCode: 1, output: null, error: { message: 'Error: boom' } });
  });

  it('rejects inline fields on a function call and function fields on inline code', async () => {
    const { call } = await setup();
    const a = (await (await call('POST', '/invoke', { function: 'hello', code: 'x' })).json()) as { error: { details: unknown } };
    expect(a.error.details).toEqual([{ path: 'code', message: 'is not a known field' }]);
    const b = (await (await call('POST', '/invoke', { runtime: 'node', code: 'x', input: 1 })).json()) as { error: { details: unknown } };
    expect(b.error.details).toEqual([{ path: 'input', message: 'is not a known field' }]);
  });
});

describe('secrets of deployed functions', () => {
  const provision = (tenant: string, name: string, content: string) => {
    mkdirSync(join(secretsDir, tenant), { recursive: true });
    writeFileSync(join(secretsDir, tenant, name), content);
  };

  it('become brokered files: the sandbox path, and the host file of the tenant and name', async () => {
    provision('acme', 'db', 'postgres://');
    const { call, invoker } = await setup();
    await call('PUT', '/functions/reader', { ...hello, secrets: { '/run/secrets/db': 'db' } });
    expect((await call('POST', '/invoke', { function: 'reader' })).status).toBe(200);
    expect(invoker.tasks[0]!.profile.brokeredFiles).toEqual([{ path: '/run/secrets/db', source: join(secretsDir, 'acme', 'db') }]);
    expect(invoker.tasks[0]!.warm!.key).toBe('fn:acme:reader:1:default');
  });

  it("a missing secret is SECRET_MISSING at invoke, naming the secret but not the host path; so is another tenant's secret", async () => {
    provision('other', 'theirs', 'x');
    const { call, invoker } = await setup();
    for (const name of ['nope', 'theirs']) {
      await call('PUT', `/functions/f-${name}`, { ...hello, secrets: { '/run/secrets/x': name } });
      const res = await call('POST', '/invoke', { function: `f-${name}` });
      expect(res.status).toBe(409);
      const json = (await res.json()) as { error: { code: string; message: string } };
      expect(json.error.code).toBe('SECRET_MISSING');
      expect(json.error.message).toContain(`secret '${name}'`);
      expect(json.error.message).not.toContain(secretsDir);
    }
    expect(invoker.tasks).toHaveLength(0);
  });

  it('a secret over 1 MiB is SECRET_TOO_LARGE at invoke, naming the secret and both sizes but not the host path; 1 MiB exactly is served', async () => {
    provision('acme', 'big', 'x'.repeat(MAX_BROKERED_FILE_BYTES + 1));
    provision('acme', 'edge', 'x'.repeat(MAX_BROKERED_FILE_BYTES));
    const { call, invoker } = await setup();
    await call('PUT', '/functions/f-big', { ...hello, secrets: { '/run/secrets/x': 'big' } });
    const res = await call('POST', '/invoke', { function: 'f-big' });
    expect(res.status).toBe(409);
    const json = (await res.json()) as { error: { code: string; message: string } };
    expect(json.error.code).toBe('SECRET_TOO_LARGE');
    expect(json.error.message).toContain(`secret 'big'`);
    expect(json.error.message).toContain(`at most ${MAX_BROKERED_FILE_BYTES} bytes: current size is ${MAX_BROKERED_FILE_BYTES + 1}`);
    expect(json.error.message).not.toContain(secretsDir);
    expect(invoker.tasks).toHaveLength(0);
    await call('PUT', '/functions/f-edge', { ...hello, secrets: { '/run/secrets/x': 'edge' } });
    expect((await call('POST', '/invoke', { function: 'f-edge' })).status).toBe(200);
  });

  it('a symlink in place of a secret is not a provisioned secret', async () => {
    mkdirSync(join(secretsDir, 'acme'), { recursive: true });
    symlinkSync('/etc/hostname', join(secretsDir, 'acme', 'link'));
    const { call } = await setup();
    await call('PUT', '/functions/f', { ...hello, secrets: { '/run/secrets/x': 'link' } });
    expect((await call('POST', '/invoke', { function: 'f' })).status).toBe(409);
  });
});

describe('canonicalJson', () => {
  it('is one text whatever the key order', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[2,{"y":2,"z":1}]},"b":1}');
  });
});
