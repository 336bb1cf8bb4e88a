// Privileged: deployed functions, warm pools, streaming, async invocations and the drain,
// end to end on real servers and real sandboxes. Each suite's server has its own private
// Redis (the harness), except the host-restart suite, which shares one between two runs.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { hostLeftovers, settledLeftovers } from './support/leftovers.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { privilegedReason, type Reply, type RunningServer, startServer } from './support/server.js';
import { parseSse } from './support/sse.js';
import { pollUntil, sleep, token } from './support/wait.js';

/** The fields of a result that do not depend on timing or on which kind of sandbox ran it. */
const DETERMINISTIC = ['status', 'exitCode', 'signal', 'reason', 'stdout', 'stderr', 'truncated', 'profile', 'limits', 'unenforced', 'oomKills', 'function', 'version', 'output', 'error'];
const pick = (r: Record<string, unknown>) => Object.fromEntries(DETERMINISTIC.filter((k) => k in r).map((k) => [k, r[k]]));

const HANDLERS = {
  node: { runtime: 'node', code: 'module.exports = async (event, context) => ({ got: event, version: context.version, fn: context.function })' },
  python: { runtime: 'python', code: 'def handler(event, context):\n    return {"got": event, "version": context["version"], "fn": context["function"]}\n' },
  bash: { runtime: 'bash', code: 'IFS= read -r -d "" event || true\nprintf \'{"got":%s}\' "$event"\n' },
} as const;

async function deploy(s: RunningServer, name: string, body: unknown, auth: 'tenant' | { bearer: string } = 'tenant'): Promise<Reply> {
  return s.request(`/functions/${name}`, { method: 'PUT', body, auth });
}

/** POST /invoke until a warm sandbox served it (the pool fills after its first claims). */
async function invokeWarm(s: RunningServer, body: Record<string, unknown>, tries = 40): Promise<any> {
  let r: any;
  for (let i = 0; i < tries; i++) {
    r = await s.invoke(body);
    if (r.warm === true) return r;
    await sleep(150);
  }
  return r;
}

describe.skipIf(privilegedReason() !== null)('deployed functions on a real server', () => {
  let s: RunningServer;
  let otherKey: string;
  let before: string[] = [];

  beforeAll(async () => {
    before = hostLeftovers();
    // Small pools, so that a burst of a few requests is larger than one; and pools that
    // shrink soon after their last claim, so the many functions this suite invokes once do
    // not hold the host's whole warm budget (ZVIZ_WARM_MAX) for a minute each.
    // Callbacks go to a receiver on 127.0.0.1, which the operator has to list.
    s = await startServer({ env: { ZVIZ_WARM_PER_POOL: '2', ZVIZ_WARM_IDLE_MS: '1500', ZVIZ_CALLBACK_HOSTS: '127.0.0.1' } });
    const other = await s.request('/admin/tenants', { method: 'POST', auth: 'admin', body: { name: 'other' } });
    expect(other.status).toBe(201);
    otherKey = other.body.apiKey;
  });
  afterAll(async () => {
    if (s) {
      const code = await s.stop();
      if (code !== 0) writeFileSync(`/tmp/zs/crash-${Date.now()}.log`, s.logs());
      expect(code).toBe(0);
    }
    const left = await settledLeftovers(s ? [s.pid] : [], before);
    expect(left, left.join('\n')).toEqual([]);
  });

  describe.each(Object.entries(HANDLERS))('%s handler', (runtime, fn) => {
    it('gets the input as its event and answers output', async () => {
      const name = `echo-${runtime}`;
      expect((await deploy(s, name, fn)).status).toBe(201);
      const input = { n: 1, list: ['a', null, true], nested: { é: 'ü' } };
      const r = await s.invoke({ function: name, input });
      expect(r.status, JSON.stringify(r)).toBe('ok');
      expect(r.error).toBeNull();
      expect(r.output).toEqual(runtime === 'bash' ? { got: input } : { got: input, version: 1, fn: name });
      expect(r).toMatchObject({ function: name, version: 1 });
    });
  });

  it.each([
    ['node', 'module.exports = async () => { throw new RangeError("too far") }', /^RangeError: too far$/, /at module\.exports/],
    ['python', 'def handler(event, context):\n    raise ValueError("bad value")\n', /^ValueError: bad value$/, /Traceback[\s\S]*line 2, in handler/],
  ])('a %s exception is status error with its message and stack', async (runtime, code, message, stack) => {
    await deploy(s, `throw-${runtime}`, { runtime, code });
    const r = await s.invoke({ function: `throw-${runtime}` });
    expect(r.status, JSON.stringify(r)).toBe('error');
    expect(r.output).toBeNull();
    expect(r.error.message).toMatch(message);
    expect(r.error.stack).toMatch(stack);
  });

  it.each([
    ['node', 'module.exports = { notAHandler: 1 }', /exports no handler function/],
    ['python', 'raise ImportError("broken module")\n', /ImportError: broken module/],
  ])('a %s handler that fails to load is status error with why, single use and reused alike', async (runtime, code, message) => {
    for (const [name, reuse] of [[`noload-${runtime}`, 'never'], [`noload-reused-${runtime}`, { maxInvocations: 5 }]] as const) {
      expect((await deploy(s, name, { runtime, code, reuse })).status).toBe(201);
      const r = await s.invoke({ function: name });
      expect(r.status, JSON.stringify(r)).toBe('error');
      expect(r.output).toBeNull();
      expect(r.error?.message, JSON.stringify(r)).toMatch(message);
    }
  });

  it.each([
    ['bash', 'echo "this is not json"'],
    ['node', 'module.exports = async () => 10n'],
    ['python', 'def handler(event, context):\n    return {1, 2}\n'],
  ])('a %s result that is not JSON is status error', async (runtime, code) => {
    await deploy(s, `nonjson-${runtime}`, { runtime, code });
    const r = await s.invoke({ function: `nonjson-${runtime}` });
    expect(r.status, JSON.stringify(r)).toBe('error');
    expect(r.error?.message, JSON.stringify(r)).toMatch(/not JSON|JSON-serializable/);
  });

  it('nested files load from the handler: lib/util.js and pkg/helper.py', async () => {
    await deploy(s, 'nested-node', { runtime: 'node', files: { 'main.js': 'const u = require("./lib/util.js"); module.exports = async (e) => u.twice(e)', 'lib/util.js': 'exports.twice = (x) => x * 2' } });
    expect((await s.invoke({ function: 'nested-node', input: 21 })).output).toBe(42);
    await deploy(s, 'nested-python', { runtime: 'python', files: { 'main.py': 'from pkg.helper import twice\ndef handler(e, c):\n    return twice(e)\n', 'pkg/__init__.py': '', 'pkg/helper.py': 'def twice(x):\n    return 2 * x\n' } });
    expect((await s.invoke({ function: 'nested-python', input: 4 })).output).toBe(8);
  });

  it('PUT twice makes versions 1 and 2; invoke runs 2, and version 1 on request', async () => {
    const v = (n: number) => ({ runtime: 'node', code: `module.exports = async () => 'v${n}'` });
    expect((await deploy(s, 'versioned', v(1))).body.version).toBe(1);
    expect((await deploy(s, 'versioned', v(2))).body.version).toBe(2);
    expect((await s.invoke({ function: 'versioned' })).output).toBe('v2');
    expect((await s.invoke({ function: 'versioned', version: 1 })).output).toBe('v1');
    expect((await s.request('/functions/versioned')).body).toMatchObject({ version: 2, files: ['main.js'] });
  });

  it("another tenant's key gets 404 for GET, DELETE and invoke", async () => {
    await deploy(s, 'private', HANDLERS.node);
    const auth = { bearer: otherKey };
    expect((await s.request('/functions/private', { auth })).status).toBe(404);
    expect((await s.request('/functions/private', { method: 'DELETE', auth })).status).toBe(404);
    const inv = await s.request('/invoke', { method: 'POST', body: { function: 'private' }, auth });
    expect(inv.status).toBe(404);
    expect(inv.body.error.code).toBe('UNKNOWN_FUNCTION');
    expect((await s.request('/functions/private')).status).toBe(200);
  });

  it('DELETE, then invoke is 404', async () => {
    await deploy(s, 'doomed', HANDLERS.python);
    expect((await s.invoke({ function: 'doomed' })).status).toBe('ok');
    expect((await s.request('/functions/doomed', { method: 'DELETE' })).status).toBe(204);
    const r = await s.request('/invoke', { method: 'POST', body: { function: 'doomed' } });
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('UNKNOWN_FUNCTION');
  });

  describe('secrets', () => {
    it('a function reads the secret the operator provisioned, read-only, at its sandbox path, through an fd that names no host path', async () => {
      const content = `postgres://user:${token()}@db/app`;
      mkdirSync(join(s.stateDir, 'secrets', 'harness'), { recursive: true, mode: 0o700 });
      writeFileSync(join(s.stateDir, 'secrets', 'harness', 'db'), content, { mode: 0o600 });
      const code = [
        'import os',
        'def handler(event, context):',
        '    with open("/run/secrets/db") as f: value, link = f.read(), os.readlink("/proc/self/fd/%d" % f.fileno())',
        '    try:',
        '        open("/run/secrets/db", "w")',
        '        writable = True',
        '    except OSError:',
        '        writable = False',
        '    return {"value": value, "writable": writable, "link": link}',
      ].join('\n');
      expect((await deploy(s, 'reads-secret', { runtime: 'python', code, secrets: { '/run/secrets/db': 'db' } })).status).toBe(201);
      const r = await s.invoke({ function: 'reads-secret' });
      expect(r.status, JSON.stringify(r)).toBe('ok');
      // The fd is a sealed copy named after the sandbox path: nothing of the state directory or the tenant.
      expect(r.output).toEqual({ value: content, writable: false, link: '/memfd:db (deleted)' });
      expect(r.audit).toContainEqual(expect.objectContaining({ kind: 'broker', path: '/run/secrets/db', decision: 'allowed' }));
    });

    it('a secret over 1 MiB on disk is a clear 409 at invoke (SECRET_TOO_LARGE), naming no host path', async () => {
      mkdirSync(join(s.stateDir, 'secrets', 'harness'), { recursive: true, mode: 0o700 });
      writeFileSync(join(s.stateDir, 'secrets', 'harness', 'huge'), Buffer.alloc((1 << 20) + 1, 0x61), { mode: 0o600 });
      await deploy(s, 'huge-secret', { runtime: 'node', code: 'module.exports = async () => 1', secrets: { '/run/secrets/huge': 'huge' } });
      const r = await s.request('/invoke', { method: 'POST', body: { function: 'huge-secret' } });
      expect(r.status).toBe(409);
      expect(r.body.error).toMatchObject({ code: 'SECRET_TOO_LARGE', message: expect.stringContaining("secret 'huge'") });
      expect(JSON.stringify(r.body)).not.toContain(s.stateDir);
    });

    it('a missing secret file is a clear error at invoke', async () => {
      await deploy(s, 'needs-secret', { runtime: 'node', code: 'module.exports = async () => 1', secrets: { '/run/secrets/api': 'api-token' } });
      const r = await s.request('/invoke', { method: 'POST', body: { function: 'needs-secret' } });
      expect(r.status).toBe(409);
      expect(r.body.error).toMatchObject({ code: 'SECRET_MISSING', message: expect.stringContaining("secret 'api-token'") });
    });
  });

  describe('warm pools', () => {
    const plantInline = {
      runtime: 'python',
      code: 'import os\np = "/tmp/planted"\nprint("present" if os.path.exists(p) else "absent")\nopen(p, "w").write("x")\n',
    };

    it('after warm-up, inline and function invocations report warm: true, and the pool is published in Redis', async () => {
      expect((await invokeWarm(s, { runtime: 'node', code: 'console.log(1)' })).warm).toBe(true);
      await deploy(s, 'warm-fn', HANDLERS.node);
      const r = await invokeWarm(s, { function: 'warm-fn', input: 5 });
      expect(r.warm).toBe(true);
      expect(r.output).toEqual({ got: 5, version: 1, fn: 'warm-fn' });
      const redis = new Redis({ path: join(s.stateDir, 'redis', 'redis.sock'), lazyConnect: true });
      try {
        await redis.connect();
        // Published every 2 s: wait for a round after the warm hit, invoking meanwhile so
        // that the pool (idle after 1.5 s in this suite) stays.
        const pattern = 'zviz:pool:*:fn:harness:warm-fn:1:default';
        const hitsOf = async () => {
          await s.invoke({ function: 'warm-fn', input: 5 });
          const [name] = await redis.keys(pattern);
          return name === undefined ? null : { name, hash: await redis.hgetall(name) };
        };
        const found = await pollUntil(hitsOf, (f) => Number(f?.hash.hits ?? 0) > 0, 8000, 100);
        expect(found).not.toBeNull();
        const { name, hash } = found!;
        expect(await redis.keys(pattern)).toHaveLength(1);
        expect(Number(hash.hits)).toBeGreaterThan(0);
        expect(Object.keys(hash).sort()).toEqual(['creating', 'hits', 'misses', 'size', 'startMs', 'target']);
        expect(await redis.ttl(name)).toBeLessThanOrEqual(10);
        // The host's stable id (from its state dir), hash-tagged.
        expect(name).toMatch(/^zviz:pool:\{[A-Za-z0-9.-]+-[0-9a-f]{8}\}:fn:harness:warm-fn:1:default$/);
      } finally {
        redis.disconnect();
      }
    });

    it('a burst larger than the pool still succeeds: misses cold-start', async () => {
      await invokeWarm(s, { runtime: 'bash', code: 'echo warm' });
      const burst = await Promise.all(Array.from({ length: 6 }, (_, i) => s.invoke({ runtime: 'bash', code: `echo ${i}` })));
      expect(burst.map((r) => r.stdout)).toEqual(['0\n', '1\n', '2\n', '3\n', '4\n', '5\n']);
      expect(burst.some((r) => r.warm === false)).toBe(true);
    });

    it('no sandbox is used twice: a file planted in /tmp is gone in the next invocation (inline code)', async () => {
      await invokeWarm(s, plantInline);
      const seen: string[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await s.invoke(plantInline);
        seen.push(`${r.stdout.trim()}:${r.warm}`);
        await sleep(100);
      }
      expect(seen.every((x) => x.startsWith('absent:')), seen.join(' ')).toBe(true);
      expect(seen.some((x) => x.endsWith(':true'))).toBe(true);
    });

    it('no sandbox is used twice: a file planted in /tmp is gone in the next invocation (deployed function)', async () => {
      await deploy(s, 'planter', {
        runtime: 'node',
        code: 'const fs = require("node:fs"); module.exports = async () => { const had = fs.existsSync("/tmp/planted"); fs.writeFileSync("/tmp/planted", "x"); return had; }',
      });
      await invokeWarm(s, { function: 'planter' });
      const seen: Array<[unknown, unknown]> = [];
      for (let i = 0; i < 6; i++) {
        const r = await s.invoke({ function: 'planter' });
        seen.push([r.output, r.warm]);
        await sleep(100);
      }
      expect(seen.map(([had]) => had)).toEqual([false, false, false, false, false, false]);
      expect(seen.some(([, warm]) => warm === true)).toBe(true);
    });

    it('a warm sandbox made with the profile default OOMs at the 64 MiB its invocation asked for', async () => {
      const alloc = { runtime: 'python', code: 'b = b"x" * (160 * 1024 * 1024)\nprint(len(b))\n' };
      // The pool is made with the profile's default (256 MiB): this fits there.
      const roomy = await invokeWarm(s, alloc);
      expect(roomy).toMatchObject({ status: 'ok', limits: { memoryMb: 256 } });
      let r: any;
      for (let i = 0; i < 20; i++) {
        r = await s.invoke({ ...alloc, limits: { memoryMb: 64 } });
        if (r.warm === true) break;
        await sleep(150);
      }
      expect(r).toMatchObject({ warm: true, status: 'oom', reason: 'memory', limits: { memoryMb: 64 } });
      expect(r.memoryPeakBytes).toBeLessThanOrEqual(64 * 1024 * 1024);
    });
  });

  describe('streaming and async deliver what the plain mode does', () => {
    const body = { function: 'modes', input: { x: [1, 2] } };
    let receiver: Server;
    let received: Array<{ headers: Record<string, unknown>; body: any }> = [];

    beforeAll(async () => {
      await deploy(s, 'modes', { runtime: 'python', code: 'import sys\ndef handler(e, c):\n    print("to stdout")\n    print("to stderr", file=sys.stderr)\n    return e\n' });
      receiver = createHttpServer((req, res) => {
        let text = '';
        req.on('data', (d: Buffer) => (text += d));
        req.on('end', () => {
          received.push({ headers: req.headers, body: JSON.parse(text) });
          res.writeHead(200).end();
        });
      });
      await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    });
    afterAll(() => receiver?.close());

    it('Accept: text/event-stream streams stdout and stderr, then the result', async () => {
      const plain = await s.invoke(body);
      const res = await s.request('/invoke', { method: 'POST', body, headers: { accept: 'text/event-stream' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const events = parseSse(res.body as string).map((e) => ({ ...e, data: JSON.parse(e.data) as any }));
      const result = events.at(-1)!;
      expect(result.event).toBe('result');
      expect(events.filter((e) => e.event === 'stdout').map((e) => e.data).join('')).toBe('to stdout\n');
      expect(events.filter((e) => e.event === 'stderr').map((e) => e.data).join('')).toBe('to stderr\n');
      expect(pick(result.data)).toEqual(pick(plain));
      expect(result.data.output).toEqual({ x: [1, 2] });
    });

    it('streams inline code too, chunk by chunk while it runs', async () => {
      const started = Date.now();
      const res = await fetch(`${s.url}/invoke`, {
        method: 'POST',
        headers: { authorization: `Bearer ${s.apiKey}`, 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ runtime: 'bash', code: 'echo first; sleep 1; echo second' }),
      });
      const reader = res.body!.getReader();
      let firstAt = 0;
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
        if (firstAt === 0 && text.includes('first')) firstAt = Date.now() - started;
      }
      const total = Date.now() - started;
      expect(parseSse(text).map((e) => e.event)).toEqual(['stdout', 'stdout', 'result']);
      // The first line arrived before the function ended, not with the result.
      expect(total - firstAt).toBeGreaterThan(500);
    });

    it('?mode=async answers 202, then GET /invocations/:id answers the same result', async () => {
      const plain = await s.invoke(body);
      const accepted = await s.request('/invoke?mode=async', { method: 'POST', body });
      expect(accepted.status).toBe(202);
      expect(accepted.body).toEqual({ id: expect.any(String), status: 'queued' });
      const id = accepted.body.id as string;
      let r: Reply;
      for (;;) {
        r = await s.request(`/invocations/${id}`);
        if (r.status !== 202) break;
        expect(r.body).toEqual({ id, status: 'running' });
        await sleep(50);
      }
      expect(r.status).toBe(200);
      expect(r.body.id).toBe(id);
      expect(pick(r.body)).toEqual(pick(plain));
      expect((await s.request(`/invocations/${id}`, { auth: { bearer: otherKey } })).status).toBe(404);
    });

    it('async with a callbackUrl on 127.0.0.1 POSTs the result there', async () => {
      received = [];
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/done`;
      const accepted = await s.request('/invoke?mode=async', { method: 'POST', body: { ...body, callbackUrl: url } });
      expect(accepted.status).toBe(202);
      const got = await pollUntil(() => received, (r) => r.length > 0, 20_000, 50);
      expect(got).toHaveLength(1);
      expect(got[0]!.headers['x-zviz-invocation']).toBe(accepted.body.id);
      expect(got[0]!.body).toMatchObject({ id: accepted.body.id, status: 'ok', output: { x: [1, 2] } });
      expect((await s.request(`/invocations/${accepted.body.id}`)).body).toEqual(got[0]!.body);
    });

    describe('an answer nested 100000 deep', () => {
      const TOO_DEEP = "Cannot read the function's result: it is nested deeper than 64 levels";
      beforeAll(async () => {
        // Pure bash: 100000 '[' then 100000 ']' on stdout, the bash runtime's answer.
        const code = 'IFS= read -r -d "" event || true\no="["; c="]"\nfor ((i = 0; i < 17; i++)); do o=$o$o; c=$c$c; done\nprintf "%s%s" "${o:0:100000}" "${c:0:100000}"\n';
        expect((await deploy(s, 'deep', { runtime: 'bash', code })).status).toBe(201);
      });

      it('sync: answers 200 with status error and a clear message, not a 500', async () => {
        const r = await s.request('/invoke', { method: 'POST', body: { function: 'deep' } });
        expect(r.status).toBe(200);
        expect(r.body).toMatchObject({ status: 'error', output: null, error: { message: TOO_DEEP } });
      });

      it('async: the record ends with status error and the callback is delivered', async () => {
        received = [];
        const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/deep`;
        const accepted = await s.request('/invoke?mode=async', { method: 'POST', body: { function: 'deep', callbackUrl: url } });
        expect(accepted.status).toBe(202);
        const id = accepted.body.id as string;
        const r = await pollUntil(() => s.request(`/invocations/${id}`), (x) => x.status !== 202, 20_000, 50);
        expect(r.status).toBe(200);
        expect(r.body).toMatchObject({ id, status: 'error', error: { message: TOO_DEEP } });
        const got = await pollUntil(() => received, (x) => x.length > 0, 20_000, 50);
        expect(got[0]!.body).toMatchObject({ id, status: 'error' });
      });
    });
  });
});

describe.skipIf(privilegedReason() !== null)('example functions', () => {
  it('the start command deploys them for dev, once: a restart on the same Redis adds no version', async () => {
    const redis: TestRedis = await startRedis();
    let first: RunningServer | null = null;
    let second: RunningServer | null = null;
    try {
      first = await startServer({ env: { ZVIZ_REDIS_URL: redis.url } });
      const devKey = /"apiKey":"(zviz_[^"]+)"/.exec(first.logs())?.[1];
      expect(devKey).toBeDefined();
      // Deployed right after the server starts listening.
      const list = await pollUntil(() => first!.request('/functions', { auth: { bearer: devKey! } }), (r) => r.body.functions?.length === 5, 10_000, 100);
      const names = (list.body.functions as Array<{ name: string; version: number }>).map((f) => `${f.name}@${f.version}`);
      expect(names).toEqual(['cpu-bench@1', 'hello-bash@1', 'hello-node@1', 'hello-python@1', 'transform@1']);
      const hello = await first.request('/invoke', { method: 'POST', body: { function: 'hello-node', input: { name: 'Ada' } }, auth: { bearer: devKey! } });
      expect(hello.body.output).toMatchObject({ message: 'Hello, Ada!' });
      const t = await first.request('/invoke', {
        method: 'POST',
        auth: { bearer: devKey! },
        body: { function: 'transform', input: { records: [{ a: 1, b: 2, c: 3 }], pick: ['a', 'c'], rename: { a: 'alpha' } } },
      });
      expect(t.body.output).toEqual({ records: [{ alpha: 1, c: 3 }] });
      expect(await first.stop()).toBe(0);
      first = null;
      second = await startServer({ env: { ZVIZ_REDIS_URL: redis.url }, tenant: { name: 'second' } });
      const client = await redis.client();
      // The second start checked the examples (and found them unchanged) once its log says so or soon after.
      await pollUntil(async () => second!.logs(), (l) => l.includes('deployed example functions'), 2000, 100);
      expect(second.logs()).not.toContain('deployed example functions');
      expect(await client.hget('zviz:{dev}:fn:hello-node', 'latest')).toBe('1');
    } finally {
      await first?.stop();
      await second?.stop();
      await redis.stop();
    }
  });
});

/** A TCP port nothing listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createNetServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

describe.skipIf(privilegedReason() !== null)('an async invocation whose server dies', () => {
  it('is failed with reason host-restart when the same host starts again', async () => {
    const redis = await startRedis();
    const port = String(await freePort());
    // The host's identity is its state dir's: the second run shares it.
    const stateDir = mkdtempSync(join(tmpdir(), 'zviz-host-'));
    let first: RunningServer | null = null;
    let second: RunningServer | null = null;
    try {
      first = await startServer({ stateDir, env: { ZVIZ_REDIS_URL: redis.url, ZVIZ_PORT: port } });
      const accepted = await first.request('/invoke?mode=async', { method: 'POST', body: { runtime: 'bash', code: 'sleep 30' } });
      expect(accepted.status).toBe(202);
      const id = accepted.body.id as string;
      expect((await first.request(`/invocations/${id}`)).status).toBe(202);
      await first.stop('SIGKILL');
      const client = await redis.client();
      expect(JSON.parse((await client.get(`zviz:{harness}:inv:${id}`))!)).toMatchObject({ status: 'running' });
      // Same host identity (the state dir's), a new run.
      second = await startServer({ stateDir, env: { ZVIZ_REDIS_URL: redis.url, ZVIZ_PORT: port }, tenant: { name: 'second' } });
      // Recovery runs right after the second server starts listening.
      const parsed = await pollUntil(async () => JSON.parse((await client.get(`zviz:{harness}:inv:${id}`))!), (r) => r.status !== 'running', 5000, 100);
      expect(parsed).toEqual({
        id,
        status: 'failed',
        reason: 'host-restart',
        error: { code: 'SANDBOX_FAILED', message: expect.stringContaining(`${readFileSync(join(stateDir, 'host-id'), 'utf8').trim()}) stopped before it ended`) },
      });
    } finally {
      await first?.stop('SIGKILL');
      await second?.stop();
      await redis.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(privilegedReason() !== null)('SIGTERM drains', () => {
  it('in-flight invocations finish with 200, new ones get 503, warm pools go, the server exits 0, nothing is left', async () => {
    const before = hostLeftovers();
    const s = await startServer();
    let code: number | null = null;
    try {
      // Warm pools exist when the signal comes.
      await deploy(s, 'slow', { runtime: 'node', code: 'module.exports = async () => { await new Promise((r) => setTimeout(r, 1500)); return "slow done"; }' });
      await invokeWarm(s, { runtime: 'bash', code: 'echo warm' });
      const inFlight = [s.post('/invoke', { runtime: 'bash', code: 'sleep 1.5; echo done' }), s.post('/invoke', { function: 'slow' })];
      const asyncOne = await s.request('/invoke?mode=async', { method: 'POST', body: { runtime: 'bash', code: 'sleep 1; echo async' } });
      expect(asyncOne.status).toBe(202);
      await sleep(400);
      process.kill(s.pid, 'SIGTERM');
      await sleep(200);
      const refused = await s.request('/invoke', { method: 'POST', body: { runtime: 'bash', code: 'echo late' } });
      expect(refused.status).toBe(503);
      expect(refused.body.error.code).toBe('SHUTTING_DOWN');
      const [plain, fn] = await Promise.all(inFlight);
      expect(plain).toMatchObject({ status: 200, body: { status: 'ok', stdout: 'done\n' } });
      expect(fn).toMatchObject({ status: 200, body: { status: 'ok', output: 'slow done' } });
    } finally {
      code = await s.stop();
    }
    expect(code).toBe(0);
    expect(s.logs()).toContain('"msg":"stopped"');
    const left = await settledLeftovers([s.pid], before);
    expect(left, left.join('\n')).toEqual([]);
  });
});
