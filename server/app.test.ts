import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SandboxOutcome } from '../worker-pool/types.js';
import { type Readiness } from './app.js';
import { ApiError, type ErrorCode } from './http/errors.js';
import { JsonLogger, silentLogger } from './ops/log.js';
import { ADMIN_TOKEN, FakeInvoker, HOST_FACTS, result, testState, testTenant, testApp } from '../test/support/fixtures.js';

const MiB = 1024 * 1024;
const JSON_TYPE = { 'content-type': 'application/json' };
const ready: Readiness = { ready: true, checks: { native: { ok: true, detail: 'abi 1' } } };

/** The tenant key of each app, sent by post(). */
const tenantAuthOf = new WeakMap<object, Promise<Record<string, string>>>();

function makeApp(opts: { invoker?: FakeInvoker; readiness?: Readiness; maxBodyBytes?: number; lines?: string[] } = {}) {
  const invoker = opts.invoker ?? new FakeInvoker();
  const lines = opts.lines;
  const state = testState();
  const app = testApp(
    {
      invoker,
      readiness: async () => opts.readiness ?? ready,
      log: lines ? new JsonLogger({ level: 'debug', write: (l) => lines.push(l) }) : silentLogger,
      maxBodyBytes: opts.maxBodyBytes,
    },
    state,
  );
  tenantAuthOf.set(app, testTenant(state).then((t) => t.auth));
  return { app, invoker };
}

async function post(app: ReturnType<typeof makeApp>['app'], body: unknown, headers: Record<string, string> = JSON_TYPE) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const auth = (await tenantAuthOf.get(app)) ?? {};
  return app.request('/invoke', { method: 'POST', headers: { ...auth, ...headers }, body: text });
}

interface ErrorJson {
  error: { code: ErrorCode; message: string; details?: unknown };
}

const good = { runtime: 'node', code: 'console.log("hello")' };

describe('POST /invoke rejects bad requests in the one error shape', () => {
  const cases: Array<{
    name: string;
    body: unknown;
    headers?: Record<string, string>;
    maxBodyBytes?: number;
    status: number;
    code: ErrorCode;
    message?: RegExp;
    details?: unknown;
  }> = [
    { name: 'malformed JSON is BAD_JSON', body: '{"runtime": "node",', status: 400, code: 'BAD_JSON' },
    { name: 'an empty body is BAD_JSON', body: '', status: 400, code: 'BAD_JSON' },
    {
      name: 'a text/plain body is UNSUPPORTED_MEDIA_TYPE',
      body: good,
      headers: { 'content-type': 'text/plain' },
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
      message: /current value is 'text\/plain'/,
    },
    { name: 'a missing content type is UNSUPPORTED_MEDIA_TYPE', body: good, headers: {}, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
    {
      name: 'an unknown field is VALIDATION_FAILED naming the field',
      body: { ...good, timeout: 5 },
      status: 400,
      code: 'VALIDATION_FAILED',
      message: /field 'timeout' is not a known field/,
      details: [{ path: 'timeout', message: 'is not a known field' }],
    },
    {
      name: 'an unknown field inside limits is VALIDATION_FAILED naming the nested field',
      body: { ...good, limits: { diskMb: 5 } },
      status: 400,
      code: 'VALIDATION_FAILED',
      details: [{ path: 'limits.diskMb', message: 'is not a known field' }],
    },
    { name: 'an unknown runtime is VALIDATION_FAILED', body: { ...good, runtime: 'ruby' }, status: 400, code: 'VALIDATION_FAILED', message: /no runtime named 'ruby' is available on this host \(GET \/runtimes lists them\)/ },
    { name: 'missing code is VALIDATION_FAILED', body: { runtime: 'node' }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'code', message: 'is required' }] },
    { name: 'empty code is VALIDATION_FAILED', body: { ...good, code: '' }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'code', message: 'must not be empty' }] },
    {
      name: 'code over 1 MiB of UTF-8 is VALIDATION_FAILED with the size',
      // 'é' is 2 bytes: under 1 Mi characters, over 1 MiB of bytes.
      body: { ...good, code: 'é'.repeat(MiB / 2 + 1) },
      status: 400,
      code: 'VALIDATION_FAILED',
      details: [{ path: 'code', message: `must be at most ${MiB} bytes of UTF-8: current size is ${MiB + 2} bytes` }],
    },
    { name: 'a body that is not an object is VALIDATION_FAILED', body: '[]', status: 400, code: 'VALIDATION_FAILED', message: /body must be an object/ },
    { name: 'an env key starting with a digit is VALIDATION_FAILED', body: { ...good, env: { '1BAD': 'x' } }, status: 400, code: 'VALIDATION_FAILED', message: /field 'env\["1BAD"\]' key must be letters/ },
    { name: 'an env key named __proto__ is VALIDATION_FAILED, not dropped', body: '{"runtime":"node","code":"x","env":{"__proto__":"x"}}', status: 400, code: 'VALIDATION_FAILED', message: /is reserved/ },
    { name: 'an env value with NUL is VALIDATION_FAILED', body: { ...good, env: { A: 'a\0b' } }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'env.A', message: 'must not contain NUL characters' }] },
    { name: 'more than 128 env entries is VALIDATION_FAILED', body: { ...good, env: Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`V${i}`, ''])) }, status: 400, code: 'VALIDATION_FAILED', message: /at most 128 entries: current count is 129/ },
    { name: 'more than 256 args is VALIDATION_FAILED', body: { ...good, args: Array(257).fill('a') }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'args', message: 'must have at most 256 items: current length is 257' }] },
    { name: 'an arg with NUL is VALIDATION_FAILED naming its index', body: { ...good, args: ['ok', 'a\0'] }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'args[1]', message: 'must not contain NUL characters' }] },
    { name: 'a limit beyond the hard bounds is VALIDATION_FAILED', body: { ...good, limits: { pids: 0 } }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'limits.pids', message: 'must be at least 1: current value is 0' }] },
    { name: 'a badly formed profile name is VALIDATION_FAILED', body: { ...good, profile: 'Default' }, status: 400, code: 'VALIDATION_FAILED' },
    { name: 'a body over maxBodyBytes is PAYLOAD_TOO_LARGE', body: { ...good, stdin: 'x'.repeat(2048) }, maxBodyBytes: 1024, status: 413, code: 'PAYLOAD_TOO_LARGE' },
    { name: 'an unknown profile is UNKNOWN_PROFILE', body: { ...good, profile: 'gpu' }, status: 404, code: 'UNKNOWN_PROFILE', message: /'gpu'/ },
    {
      name: 'a limit above the profile max is LIMIT_EXCEEDS_PROFILE naming field and max',
      body: { ...good, limits: { memoryMb: 4096 } },
      status: 400,
      code: 'LIMIT_EXCEEDS_PROFILE',
      message: /^Cannot apply limits: memoryMb must be at most 1024 for profile 'default': current value is 4096$/,
      details: { field: 'memoryMb', max: 1024, requested: 4096 },
    },
    { name: 'a runtime the profile does not allow is RUNTIME_NOT_ALLOWED', body: { ...good, runtime: 'bash', profile: 'node-only' }, status: 400, code: 'RUNTIME_NOT_ALLOWED', message: /runtime 'bash' is not allowed by profile 'node-only'/ },
  ];

  it.each(cases)('$name', async ({ body, headers, maxBodyBytes, status, code, message, details }) => {
    const { app, invoker } = makeApp({ maxBodyBytes });
    const res = await post(app, body, headers);
    expect(res.status).toBe(status);
    const json = (await res.json()) as ErrorJson;
    expect(Object.keys(json)).toEqual(['error']);
    expect(json.error.code).toBe(code);
    expect(json.error.message).not.toMatch(/\.$/);
    if (message) expect(json.error.message).toMatch(message);
    if (details !== undefined) expect(json.error.details).toEqual(details);
    expect(invoker.tasks).toHaveLength(0);
  });
});

describe('routing', () => {
  it.each([
    ['GET', '/invoke', 'POST'],
    ['PUT', '/invoke', 'POST'],
    ['POST', '/healthz', 'GET, HEAD'],
    ['DELETE', '/host', 'GET, HEAD'],
  ])('%s %s is METHOD_NOT_ALLOWED with Allow: %s', async (method, path, allow) => {
    const res = await makeApp().app.request(path, { method });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe(allow);
    expect(((await res.json()) as ErrorJson).error.code).toBe('METHOD_NOT_ALLOWED');
  });

  it('an unknown path is NOT_FOUND', async () => {
    const res = await makeApp().app.request('/nope');
    expect(res.status).toBe(404);
    expect(((await res.json()) as ErrorJson).error).toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining("'/nope'") });
  });

  it('GET /healthz answers ok', async () => {
    const res = await makeApp().app.request('/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it.each([
    [true, 200],
    [false, 503],
  ])('GET /readyz with ready=%s answers %i with the readiness object', async (isReady, status) => {
    const readiness: Readiness = { ready: isReady, checks: { cgroup: { ok: isReady, detail: 'x' } } };
    const res = await makeApp({ readiness }).app.request('/readyz');
    expect(res.status).toBe(status);
    expect(await res.json()).toEqual(readiness);
  });

  // A load balancer checking /readyz stops sending within one interval, while admitted work finishes.
  it('GET /readyz answers 503 SHUTTING_DOWN at once when the drain begins, without running the checks', async () => {
    const { Drain } = await import('./ops/drain.js');
    const drain = new Drain();
    let checked = 0;
    const app = testApp({ drain, readiness: async () => (checked++, ready) });
    const before = await app.request('/readyz');
    expect(before.status).toBe(200);
    expect(before.headers.get('connection')).toBeNull();
    const release = drain.hold();
    drain.begin();
    const res = await app.request('/readyz');
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    // Every answer while draining closes its connection, whatever the route.
    expect(res.headers.get('connection')).toBe('close');
    expect((await app.request('/healthz')).headers.get('connection')).toBe('close');
    expect(((await res.json()) as ErrorJson).error).toMatchObject({ code: 'SHUTTING_DOWN', details: { inFlight: 1 } });
    expect(checked).toBe(1);
    release();
  });

  it('GET /host answers the host facts', async () => {
    const res = await makeApp().app.request('/host', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(await res.json()).toEqual(HOST_FACTS);
  });
});

describe('POST /invoke when the invoker fails', () => {
  const failing: Array<[string, () => Promise<SandboxOutcome>, number, ErrorCode]> = [
    ['a full queue is OVERLOADED', () => Promise.reject(new ApiError('OVERLOADED', 'Cannot queue invocation: queue is full')), 503, 'OVERLOADED'],
    ['a native failure is SANDBOX_UNAVAILABLE', async () => ({ ok: false, error: { code: 'CGROUP', errno: 13, message: 'mkdir `/sys/fs/cgroup/zviz/x`: Permission denied' } }), 503, 'SANDBOX_UNAVAILABLE'],
    [
      'a native failure after the sandbox started is SANDBOX_FAILED (502: it may have run)',
      async () => ({ ok: false, error: { code: 'PROTOCOL', errno: 0, message: 'supervisor died before reporting a result' }, cpuMs: 40, started: true }),
      502,
      'SANDBOX_FAILED',
    ],
    ['a native INVALID_SPEC is INTERNAL', async () => ({ ok: false, error: { code: 'INVALID_SPEC', errno: 0, message: 'argv[0] is not absolute' } }), 500, 'INTERNAL'],
  ];
  it.each(failing)('%s', async (_name, respond, status, code) => {
    const res = await post(makeApp({ invoker: new FakeInvoker(respond) }).app, good);
    expect(res.status).toBe(status);
    expect(((await res.json()) as ErrorJson).error.code).toBe(code);
  });

  it('a native failure keeps the native message and codes', async () => {
    const invoker = new FakeInvoker(async () => ({ ok: false, error: { code: 'MOUNT', errno: 1, message: 'mount `/usr` read-only: Operation not permitted' } }));
    const json = (await (await post(makeApp({ invoker }).app, good)).json()) as ErrorJson;
    expect(json.error.message).toBe('Cannot create sandbox: mount `/usr` read-only: Operation not permitted');
    expect(json.error.details).toEqual({ nativeCode: 'MOUNT', errno: 1 });
  });

  it.each([
    ['a plain Error', () => Promise.reject(new Error('secret /etc/zviz/token leaked'))],
    ['a thrown string', () => Promise.reject('secret /etc/zviz/token leaked')],
  ])('%s becomes INTERNAL with no message or stack in the body, and the stack in the log', async (_name, respond) => {
    const lines: string[] = [];
    const res = await post(makeApp({ invoker: new FakeInvoker(respond), lines }).app, good);
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(text).not.toMatch(/secret|token|\bat\b.*:\d+:\d+|stack/);
    const json = JSON.parse(text) as ErrorJson;
    expect(json.error.code).toBe('INTERNAL');
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'internal error');
    expect(JSON.stringify(logged)).toMatch(/secret \/etc\/zviz\/token leaked/);
    expect(logged?.incident).toEqual((json.error.details as { incident: string }).incident);
  });
});

describe('POST /invoke with a good request', () => {
  beforeEach(() => {
    process.env.ZVIZ_CANARY = 'must-not-leak';
  });
  afterEach(() => {
    delete process.env.ZVIZ_CANARY;
  });

  it('answers the documented shape and logs one line', async () => {
    const lines: string[] = [];
    const res = await post(makeApp({ lines }).app, good);
    expect(res.status).toBe(200);
    const json = (await res.json()) as Record<string, unknown>;
    expect(json).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      status: 'ok',
      exitCode: 0,
      signal: null,
      reason: null,
      stdout: 'hello\n',
      stderr: '',
      truncated: false,
      durationMs: 12.3,
      setupMs: 3.2,
      cpuMs: 7.1,
      brokerCpuMs: 0,
      chargedCpuMs: 7.1,
      memoryPeakBytes: 4_194_304,
      oomKills: 0,
      audit: [],
      warm: false,
      unenforced: [],
      profile: 'default',
      limits: { timeoutMs: 5000, memoryMb: 256, pids: 64, cpus: 1, outputBytes: 1048576 },
    });
    const invokeLines = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'invoke');
    expect(invokeLines).toEqual([
      expect.objectContaining({ level: 'info', id: json.id, runtime: 'node', profile: 'default', status: 'ok', durationMs: 12.3 }),
    ]);
  });

  it('sends the invoker the argv, file, env and stdin of the runtime, without the server env', async () => {
    const { app, invoker } = makeApp();
    await post(app, { runtime: 'python', code: 'print(1)', args: ['a', 'b c'], stdin: 'in', env: { FOO: 'bar', HOME: '/work' } });
    const [task] = invoker.tasks;
    expect(task?.runtime).toBe('python');
    expect(task?.argv).toEqual(['/usr/bin/python3', '/fn/main.py', 'a', 'b c']);
    expect(task?.files).toEqual([{ name: 'main.py', content: 'print(1)' }]);
    expect(task?.stdin).toBe('in');
    expect(task?.env).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/work', LANG: 'C.UTF-8', FOO: 'bar' });
    expect(task?.env).not.toHaveProperty('ZVIZ_CANARY');
    expect(JSON.stringify(task)).not.toContain('must-not-leak');
    expect(task?.profile).toMatchObject({ name: 'default', filesystem: expect.any(Object), landlock: expect.any(Object), rlimits: { nofile: 1024, fsizeMb: 64 }, network: { mode: 'none' }, brokeredFiles: [] });
    expect(task?.profile.seccompAllow).toContain('read');
    expect(task?.warm).toMatchObject({ key: 'inline:python:default', handler: false });
    expect(JSON.parse(task?.warm?.control ?? '{}')).toEqual({ code: 'print(1)', args: ['a', 'b c'], env: { FOO: 'bar', HOME: '/work' } });
    expect(task?.warm?.template.env).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' });
    expect(JSON.stringify(task?.warm)).not.toContain(process.env.ZVIZ_CANARY ?? 'no-canary');
  });

  it.each([
    ['node', ['/usr/bin/node', '/fn/main.js'], 'main.js'],
    ['bash', ['/usr/bin/bash', '/fn/main.sh'], 'main.sh'],
  ])('runs %s code as %j from file %s with the base env only', async (runtime, argv, file) => {
    const { app, invoker } = makeApp();
    await post(app, { runtime, code: 'x' });
    expect(invoker.tasks[0]).toMatchObject({ argv, files: [{ name: file, content: 'x' }], stdin: '' });
    expect(invoker.tasks[0]?.env).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' });
  });

  it('applies the profile defaults and honours a narrowed limit', async () => {
    const { app, invoker } = makeApp();
    const res = await post(app, { ...good, profile: 'minimal', limits: { memoryMb: 64, cpus: 0.25 } });
    const expected = { timeoutMs: 2000, memoryMb: 64, pids: 16, cpus: 0.25, outputBytes: 65536 };
    expect(invoker.tasks[0]?.limits).toEqual(expected);
    expect(await res.json()).toMatchObject({ profile: 'minimal', limits: expected });
  });

  it('accepts a limit equal to the profile max and a charset on the content type', async () => {
    const { app, invoker } = makeApp();
    const res = await post(app, { ...good, limits: { memoryMb: 1024 } }, { 'content-type': 'application/json; charset=utf-8' });
    expect(res.status).toBe(200);
    expect(invoker.tasks[0]?.limits.memoryMb).toBe(1024);
  });

  it('returns 200 with the function failure for a non-zero exit', async () => {
    const invoker = new FakeInvoker(async () => ({ ok: true, result: result({ exitCode: 3, stderr: 'boom' }) }));
    const res = await post(makeApp({ invoker }).app, good);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'error', exitCode: 3, reason: null, stderr: 'boom' });
  });
});
