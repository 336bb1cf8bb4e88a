// Privileged: a property-based fuzz of the HTTP API (fast-check) against a real server.
// Generated methods, paths (known routes, random suffixes, percent-encoding, very long),
// headers (content types, Authorization variants, Accept) and bodies (arbitrary JSON,
// near-valid bodies of every JSON route with mutated fields, types and sizes, invalid UTF-8,
// huge numbers, deep nesting), sent on a raw socket so nothing is cleaned up on the way.
// Every answer must be a status the OpenAPI document lists (or one of the router's, the
// middleware's or the HTTP layer's: 400, 404, 405, 408, 413, 415, 431); non-2xx answers
// carry the JSON error shape (HEAD carries no body); no 5xx but a 503 with a documented
// code; no hang; and the server is alive at the end with no uncaught exception and no
// INTERNAL error in its log.
//
// Size: ZVIZ_FUZZ_RUNS (default 150) runs per property (the malformed-HTTP one half as many);
// about 700 requests, well under a minute. ZVIZ_FUZZ_SEED replays a failure.
import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';

const RUNS = Number(process.env.ZVIZ_FUZZ_RUNS ?? 150);
const SEED = process.env.ZVIZ_FUZZ_SEED === undefined ? undefined : Number(process.env.ZVIZ_FUZZ_SEED);
const REQUEST_TIMEOUT_MS = 15_000;

/** 503 codes the API documents: the host or a dependency cannot serve right now. */
const UNAVAILABLE_CODES = ['STATE_UNAVAILABLE', 'SANDBOX_UNAVAILABLE', 'OVERLOADED', 'NOT_READY', 'SHUTTING_DOWN'];

interface RawRequest {
  method: string;
  /** Request target as sent (already encoded). */
  target: string;
  headers: Array<[string, string]>;
  body?: Buffer;
}

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: Buffer;
}

function dechunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at < data.length) {
    const eol = data.indexOf('\r\n', at);
    if (eol < 0) break;
    const size = parseInt(data.subarray(at, eol).toString('latin1'), 16);
    if (!Number.isFinite(size) || size === 0) break;
    parts.push(data.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/** Status line and headers of a response head, or null while incomplete. */
function parseHead(raw: Buffer): { status: number; headers: Map<string, string>; bodyAt: number } | null {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const [statusLine = '', ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const headers = new Map<string, string>();
  for (const l of lines) headers.set(l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim());
  return { status: Number(statusLine.split(' ')[1]), headers, bodyAt: end + 4 };
}

/**
 * Sends exactly these bytes on a fresh connection; resolves with the first complete answer
 * (the connection may stay open: a request the parser took leniently may not say close),
 * rejects when the connection closes without one or nothing comes in time (a hang).
 */
function sendRaw(port: number, head: Buffer, body?: Buffer, isHead = false): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let raw = Buffer.alloc(0);
    let settled = false;
    const finish = (res: RawResponse | Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (res instanceof Error) reject(res);
      else resolve(res);
    };
    const timer = setTimeout(() => finish(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms (hang)`)), REQUEST_TIMEOUT_MS);
    const complete = (closed: boolean): void => {
      const h = parseHead(raw);
      if (h === null) {
        if (closed) finish(new Error(`connection closed without an answer (${raw.length} bytes: ${JSON.stringify(raw.toString('latin1').slice(0, 80))})`));
        return;
      }
      let payload: Buffer = raw.subarray(h.bodyAt);
      const noBody = isHead || h.status === 204 || h.status === 304;
      if (!noBody && h.headers.get('transfer-encoding') === 'chunked') {
        if (!closed && !payload.includes('0\r\n\r\n')) return;
        payload = dechunk(payload);
      } else if (!noBody && h.headers.has('content-length')) {
        if (!closed && payload.length < Number(h.headers.get('content-length'))) return;
      } else if (!noBody && !closed) {
        return; // body until close
      }
      finish({ status: h.status, headers: h.headers, body: noBody ? Buffer.alloc(0) : payload });
    };
    sock.on('data', (d: Buffer) => {
      raw = Buffer.concat([raw, d]);
      complete(false);
    });
    // The server may stop reading (413, 431) and close: EPIPE/ECONNRESET, then 'close'.
    sock.on('error', () => undefined);
    sock.on('close', () => complete(true));
    sock.on('connect', () => {
      sock.write(head);
      if (body !== undefined && body.length > 0) sock.write(body);
    });
  });
}

function encodeRequest(r: RawRequest): Buffer {
  const lines = [`${r.method} ${r.target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
  for (const [k, v] of r.headers) lines.push(`${k}: ${v}`);
  if (r.body !== undefined) lines.push(`Content-Length: ${r.body.length}`);
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
}

// ---------------------------------------------------------------------------------------
// Generators

/** Route templates of the API, with a value for their parameter. */
const ROUTES = [
  '/invoke',
  '/invocations/:id',
  '/functions',
  '/functions/:name',
  '/audit',
  '/healthz',
  '/readyz',
  '/host',
  '/metrics',
  '/openapi.json',
  '/admin/tenants',
  '/admin/tenants/:name',
  '/admin/tenants/:name/keys',
  '/admin/audit',
];

const token = fc.stringMatching(/^[A-Za-z0-9._~-]{0,24}$/);
/** A path segment as sent: plain, percent-encoded (valid or not), or odd. */
const segment = fc.oneof(
  token,
  fc.string({ maxLength: 20 }).map((s) => encodeURIComponent(s)),
  fc.constantFrom('%00', '%2F', '%2e%2e', '..', '.', '%ZZ', '%C0%AF', '%E2%80%AE', '%F0%9F%92%A9', '%', '%%', '%25', '~', ';x=1', ''),
);
const paramValue = fc.oneof(
  fc.constantFrom('fuzz', 'hello-node', 'UPPER', 'a'.repeat(63), 'a'.repeat(64), '0bad', '-x', 'x:y', '00000000-0000-0000-0000-000000000000'),
  segment,
);

const path = fc.oneof(
  { weight: 5, arbitrary: fc.tuple(fc.constantFrom(...ROUTES), paramValue).map(([r, v]) => r.replace(':id', v).replace(':name', v)) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...ROUTES), fc.array(segment, { maxLength: 3 })).map(([r, s]) => [r.replace(/:\w+/, 'fuzz'), ...s].join('/')) },
  { weight: 1, arbitrary: fc.array(segment, { minLength: 1, maxLength: 5 }).map((s) => '/' + s.join('/')) },
  // Long enough to pass Node's 16 KiB limit on the request head.
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('/invoke', '/functions/', '/admin/tenants/'), fc.integer({ min: 1000, max: 20_000 })).map(([p, n]) => p + 'a'.repeat(n)) },
);
const query = fc.oneof(
  fc.constant(''),
  fc.constantFrom('?mode=async', '?mode=sync', '?mode=bogus', '?limit=0', '?limit=1001', '?limit=abc', '?cursor=1-0', '?cursor=x', '?tenant=other', '?mode=async&mode=sync', '?', '?%ZZ=1'),
  fc.dictionary(token, token, { maxKeys: 3 }).map((q) => '?' + new URLSearchParams(q).toString()),
);

const method = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS') },
  // CONNECT is left out: Node hands it to a 'connect' listener, or closes the socket.
  { weight: 1, arbitrary: fc.constantFrom('get', 'TRACE', 'PROPFIND', 'FOO', 'PURGE', 'MKCOL') },
);

const contentType = fc.oneof(
  { weight: 6, arbitrary: fc.constant('application/json') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      'application/json; charset=utf-8',
      'APPLICATION/JSON',
      ' application/json ;charset=latin1',
      'application/json; charset=utf-16',
      'application/jsonx',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/problem+json',
      '*/*',
      '',
      ';',
    ),
  },
  { weight: 1, arbitrary: fc.stringMatching(/^[\x21-\x7e ]{0,40}$/) },
);

const accept = fc.constantFrom('application/json', 'text/event-stream', '*/*', 'text/html', 'application/xml', '', 'text/event-stream;q=0.1, application/json');

/** Bodies near what the JSON routes accept, with one part mutated. */
function nearValid(base: Record<string, unknown>): fc.Arbitrary<unknown> {
  const keys = Object.keys(base);
  const wild = fc.oneof(
    fc.jsonValue(),
    fc.constantFrom(1e308, -1e308, 2 ** 53 + 1, -0, 0.5, -1, 1e-320, '', ' ', '\u0000', '\ud800', '__proto__', []),
    fc.string({ maxLength: 10_000 }),
    fc.integer({ min: 1, max: 2000 }).map((n) => 'x'.repeat(n * 100)),
  );
  return fc.oneof(
    fc.constant(base),
    fc.tuple(fc.constantFrom(...keys), wild).map(([k, v]) => ({ ...base, [k]: v })),
    fc.constantFrom(...keys).map((k) => Object.fromEntries(Object.entries(base).filter(([x]) => x !== k))),
    fc.tuple(fc.string({ maxLength: 12 }), wild).map(([k, v]) => ({ ...base, [k]: v })),
    fc.tuple(fc.constantFrom('limits', 'env', 'args', 'quotas', 'files', 'secrets', 'input'), fc.dictionary(fc.string({ maxLength: 12 }), wild, { maxKeys: 4 })).map(
      ([k, v]) => ({ ...base, [k]: v }),
    ),
  );
}

// The runnable bodies end quickly: a timeout of 1 s, small output.
const QUICK = { timeoutMs: 1000, outputBytes: 4096 };
const invokeBody = nearValid({ runtime: 'bash', code: 'echo hi', limits: QUICK, stdin: '', args: [], env: {}, profile: 'default' });
const invokeFunctionBody = nearValid({ function: 'fuzz', input: { name: 'x' }, limits: QUICK });
const deployBody = nearValid({ runtime: 'python', code: 'def handler(event, context):\n    return event\n', limits: QUICK, env: {}, profile: 'default' });
const tenantBody = nearValid({ name: 'fuzz-t', quotas: { concurrency: 1, invocationsPerMinute: 10, cpuSeconds: 1, cpuWindowSeconds: 60, maxLimits: {} } });

/** Deep nesting, up to 20 000 levels: the body itself, or the value of a field. */
const deep = fc
  .tuple(
    fc.integer({ min: 10, max: 20_000 }),
    fc.boolean(),
    fc.constantFrom('', '{"function":"fuzz","input":', '{"runtime":"bash","code":"echo hi","limits":', '{"runtime":"bash","code":"echo hi","env":', '{"name":"fuzz-d","quotas":'),
  )
  .map(([n, arr, field]) => {
    const value = arr ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n);
    return Buffer.from(field === '' ? value : `${field}${value}}`);
  });
/** Bytes that are not UTF-8, inside and outside JSON strings. */
const invalidUtf8 = fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.boolean()).map(([bytes, inString]) =>
  inString
    ? Buffer.concat([Buffer.from('{"runtime":"bash","code":"echo '), Buffer.from([0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80]), Buffer.from(bytes), Buffer.from('"}')])
    : Buffer.from(bytes),
);
const hugeNumbers = fc.constantFrom(
  '{"runtime":"bash","code":"echo hi","limits":{"timeoutMs":1e999}}',
  '{"runtime":"bash","code":"echo hi","limits":{"memoryMb":123456789012345678901234567890}}',
  '{"runtime":"bash","code":"echo hi","limits":{"pids":-1e-999}}',
  '{"name":"fuzz-n","quotas":{"concurrency":1e308}}',
  '1e99999',
  '-',
  '{"a":1,}',
  '{"a":1}{"b":2}',
  '\ufeff{"runtime":"bash","code":"echo bom"}',
);

const jsonText = (a: fc.Arbitrary<unknown>) => a.map((v) => Buffer.from(JSON.stringify(v) ?? 'null'));
const body = fc.oneof(
  { weight: 4, arbitrary: jsonText(invokeBody) },
  { weight: 1, arbitrary: jsonText(invokeFunctionBody) },
  { weight: 2, arbitrary: jsonText(deployBody) },
  { weight: 1, arbitrary: jsonText(tenantBody) },
  { weight: 2, arbitrary: jsonText(fc.jsonValue({ maxDepth: 4 })) },
  { weight: 1, arbitrary: deep },
  { weight: 1, arbitrary: invalidUtf8 },
  { weight: 1, arbitrary: hugeNumbers.map((s) => Buffer.from(s)) },
  { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
);

// ---------------------------------------------------------------------------------------

describe.skipIf(privilegedReason() !== null)('HTTP API fuzz (fast-check)', () => {
  let s: RunningServer;
  let port: number;
  /** Every status the OpenAPI document lists for any operation. */
  let documented: Set<number>;
  const counts = { runs: 0, requests: 0, byStatus: new Map<number, number>() };

  beforeAll(async () => {
    s = await startServer({ compatAuth: false });
    port = Number(new URL(s.url).port);
    const doc = (await s.request('/openapi.json', { auth: false })).body;
    documented = new Set<number>();
    for (const ops of Object.values(doc.paths as Record<string, Record<string, { responses: Record<string, unknown> }>>)) {
      for (const op of Object.values(ops)) for (const status of Object.keys(op.responses)) documented.add(Number(status));
    }
    // A deployed function the near-valid {function} bodies may reach.
    const fn = await s.request('/functions/fuzz', { method: 'PUT', body: { runtime: 'python', code: 'def handler(event, context):\n    return event\n' } });
    expect([200, 201]).toContain(fn.status);
  });
  afterAll(async () => {
    if (!s) return;
    console.log(
      `api-fuzz: ${counts.runs} runs, ${counts.requests} requests; by status: ${[...counts.byStatus].sort(([a], [b]) => a - b).map(([k, v]) => `${k}×${v}`).join(' ')}`,
    );
    await s.stop();
  });

  const authorization = () =>
    fc.oneof(
      { weight: 5, arbitrary: fc.constant(`Bearer ${s.apiKey}`) },
      { weight: 2, arbitrary: fc.constant(`Bearer ${s.adminToken}`) },
      {
        weight: 3,
        arbitrary: fc.oneof(
          fc.constantFrom(
            '',
            'Bearer',
            'Bearer ',
            `bearer   ${s.apiKey}   `,
            `Bearer ${s.apiKey} extra`,
            `Bearer ${s.apiKey!.slice(0, -2)}xx`,
            `Bearer ${s.apiKey!.replace(/_[0-9a-f]{16}_/, '_ffffffffffffffff_')}`,
            'Bearer zviz_0123456789abcdef_',
            'Bearer zviz__x',
            'Basic dXNlcjpwYXNz',
            'Digest username="x"',
            'Bearer \u00e9\u00e9',
          ),
          fc.stringMatching(/^[\x20-\x7e]{0,200}$/).map((t) => `Bearer ${t}`),
          fc.integer({ min: 100, max: 12_000 }).map((n) => `Bearer ${'k'.repeat(n)}`),
        ),
      },
      { weight: 1, arbitrary: fc.constant(null) },
    );

  const request = () =>
    fc.record({
      method,
      target: fc.tuple(path, query).map(([p, q]) => p + q),
      authorization: authorization(),
      contentType: fc.option(contentType, { nil: null, freq: 4 }),
      accept: fc.option(accept, { nil: null, freq: 3 }),
      body: fc.option(body, { nil: null, freq: 3 }),
    });

  async function check(r: RawRequest): Promise<void> {
    let res: RawResponse;
    const logAt = s.logs().length;
    try {
      res = await sendRaw(port, encodeRequest(r), r.body, r.method === 'HEAD');
    } catch (e) {
      throw new Error(`${r.method} ${r.target.slice(0, 200)}: ${(e as Error).message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
    const internal = s.logs().slice(logAt).split('\n').find((l) => l.includes('"msg":"internal error"') || /uncaught|unhandled/i.test(l));
    expect(internal, `${r.method} ${r.target.slice(0, 120)} logged: ${internal?.slice(0, 400)}`).toBeUndefined();
    counts.requests++;
    counts.byStatus.set(res.status, (counts.byStatus.get(res.status) ?? 0) + 1);
    const where = `${r.method} ${r.target.slice(0, 120)} → ${res.status} ${res.body.toString('utf8').slice(0, 300)}`;
    expect(allowed().has(res.status), `undocumented status: ${where}`).toBe(true);
    if (res.status < 400 || r.method === 'HEAD') return;
    expect(res.headers.get('content-type') ?? '', `error without JSON: ${where}`).toMatch(/^application\/json/);
    let parsed: any;
    try {
      parsed = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw new Error(`error body is not JSON: ${where}`);
    }
    if (res.status === 503 && r.target.startsWith('/readyz')) {
      expect(parsed.ready, where).toBe(false);
      return;
    }
    expect(typeof parsed?.error?.code, `error shape: ${where}`).toBe('string');
    expect(typeof parsed.error.message, `error shape: ${where}`).toBe('string');
    if (res.status >= 500) {
      expect(res.status, `a 5xx: ${where}`).toBe(503);
      expect(UNAVAILABLE_CODES, `a 503 with an undocumented code: ${where}`).toContain(parsed.error.code);
    }
  }

  const toRaw = (g: {
    method: string;
    target: string;
    authorization: string | null;
    contentType: string | null;
    accept: string | null;
    body: Buffer | null;
  }): RawRequest => ({
    method: g.method,
    target: g.target,
    headers: [
      ...(g.authorization !== null ? ([['Authorization', g.authorization]] as Array<[string, string]>) : []),
      ...(g.contentType !== null ? ([['Content-Type', g.contentType]] as Array<[string, string]>) : []),
      ...(g.accept !== null ? ([['Accept', g.accept]] as Array<[string, string]>) : []),
    ],
    ...(g.body !== null ? { body: g.body } : {}),
  });

  /**
   * The OpenAPI document's statuses, the router's and middleware's (404, 405, 413, 415), and
   * the HTTP layer's for requests it cannot parse (400), heads over 16 KiB (431) and requests
   * that do not arrive in time (408), which README documents.
   */
  const allowed = (): Set<number> => new Set([...documented, 400, 404, 405, 408, 413, 415, 431]);

  const params = (runs: number): fc.Parameters<unknown> => ({ numRuns: runs, ...(SEED !== undefined ? { seed: SEED } : {}), endOnFailure: true });

  /** fc.assert, with a failure that names the seed and the broken promise, not a 20 KiB counterexample. */
  async function holds<T>(property: fc.IAsyncProperty<T>, runs: number): Promise<void> {
    const out = await fc.check(property, params(runs));
    counts.runs += out.numRuns;
    if (out.failed) {
      const why = out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance);
      throw new Error(`property failed after ${out.numRuns} runs (reproduce: ZVIZ_FUZZ_SEED=${out.seed}, path ${out.counterexamplePath}):\n${why.slice(0, 2000)}`);
    }
  }

  it('POST /invoke: generated bodies, content types and credentials get documented answers', async () => {
    const gen = fc.record({
      target: fc.constantFrom('/invoke', '/invoke', '/invoke?mode=async', '/invoke?mode=bogus'),
      authorization: authorization(),
      contentType: fc.option(contentType, { nil: null, freq: 8 }),
      accept: fc.option(accept, { nil: null, freq: 3 }),
      body: body,
    });
    await holds(fc.asyncProperty(gen, (g) => check(toRaw({ ...g, method: 'POST' }))), RUNS);
  });

  it('PUT /functions/:name and the admin JSON routes: generated bodies get documented answers', async () => {
    const gen = fc.record({
      method: fc.constantFrom('PUT', 'POST', 'PATCH'),
      target: fc.oneof(
        paramValue.map((v) => `/functions/${v}`),
        fc.constant('/admin/tenants'),
        // Never the harness tenant: disabling it or rotating its key ends the run's credentials.
        paramValue.filter((v) => v !== 'harness').map((v) => `/admin/tenants/${v}`),
      ),
      authorization: authorization(),
      contentType: fc.option(contentType, { nil: null, freq: 8 }),
      accept: fc.constant(null),
      body,
    });
    await holds(fc.asyncProperty(gen, (g) => check(toRaw(g))), RUNS);
  });

  it('any method on generated paths (known routes, suffixes, percent-encoding, very long) gets a documented answer', async () => {
    const gen = request().filter((g) => !/^\/admin\/tenants\/harness(\/|$|\?)/.test(g.target) || g.method === 'GET');
    await holds(fc.asyncProperty(gen, (g) => check(toRaw(g))), RUNS);
  });

  it('header values of every printable kind and size get documented answers', async () => {
    const gen = fc.record({
      method: fc.constantFrom('GET', 'POST'),
      target: fc.constantFrom('/invoke', '/audit', '/functions', '/admin/tenants', '/healthz'),
      authorization: authorization(),
      contentType: fc.option(contentType, { nil: null }),
      accept: fc.option(fc.stringMatching(/^[\x20-\x7e]{0,100}$/), { nil: null }),
      body: fc.option(jsonText(invokeBody), { nil: null }),
    });
    await holds(fc.asyncProperty(gen, (g) => check(toRaw(g))), RUNS);
  });

  it('malformed HTTP (bad request lines, header bytes, framing) gets a documented answer, never a hang', async () => {
    const malformed = fc.oneof(
      fc.constantFrom(
        'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n',
        'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n',
        'GET  /healthz  HTTP/1.1\r\nHost: x\r\n\r\n',
        'GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n',
        'POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello',
        'POST /invoke HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n',
        'POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
        'POST /invoke HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n',
        'GET /healthz HTTP/1.1\r\nHost: x\r\nX: \x7f\x80\xff\r\n\r\n',
        'FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
        // Empty lines before a request are skipped (RFC 9112 2.2); alone they are an idle
        // connection, which the server keeps until its header timeout: not a hang to test.
        '\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
        'GET\r\n\r\n',
      ),
      fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.concat([Buffer.from('GET /'), Buffer.from(b), Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n')]).toString('latin1')),
      fc.integer({ min: 17_000, max: 40_000 }).map((n) => `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(n)}\r\n\r\n`),
    );
    await holds(
      fc.asyncProperty(malformed, async (text) => {
        let res: RawResponse;
        try {
          res = await sendRaw(port, Buffer.from(text, 'latin1'), undefined, text.startsWith('HEAD'));
        } catch (e) {
          throw new Error(`${JSON.stringify(text.slice(0, 300))}: ${(e as Error).message}`);
        }
        counts.requests++;
        counts.byStatus.set(res.status, (counts.byStatus.get(res.status) ?? 0) + 1);
        const where = `${JSON.stringify(text.slice(0, 60))} → ${res.status} ${res.body.toString('utf8').slice(0, 200)}`;
        expect(allowed().has(res.status), `undocumented status: ${where}`).toBe(true);
        if (res.status >= 400) expect(res.headers.get('content-type') ?? '', `error without JSON: ${where}`).toMatch(/^application\/json/);
      }),
      Math.max(20, Math.floor(RUNS / 2)),
    );
  });

  // Found by this suite: a client that hung up mid-body was logged as an internal error.
  it('a client that disconnects in the middle of a body is not an internal error', async () => {
    const logAt = s.logs().length;
    for (const framing of ['Content-Length: 100', 'Content-Length: 4194304', 'Transfer-Encoding: chunked']) {
      await new Promise<void>((resolve) => {
        const sock = connect(port, '127.0.0.1');
        sock.on('error', () => undefined);
        sock.on('connect', () => {
          sock.write(
            `POST /invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.apiKey}\r\nContent-Type: application/json\r\n${framing}\r\n\r\n` +
              (framing.startsWith('Transfer') ? 'b\r\n{"runtime":\r\n' : '{"runtime":'),
          );
          setTimeout(() => {
            sock.destroy();
            resolve();
          }, 200);
        });
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(s.logs().slice(logAt)).not.toContain('"msg":"internal error"');
    expect((await s.request('/healthz', { auth: false })).status).toBe(200);
  });

  it('the server is alive at the end, its log has no uncaught exception and no internal error', async () => {
    expect(() => process.kill(s.pid, 0)).not.toThrow();
    expect((await s.request('/healthz', { auth: false })).status).toBe(200);
    const logs = s.logs();
    expect(logs).not.toMatch(/uncaught|unhandled/i);
    expect(logs).not.toContain('"msg":"internal error"');
  });
});
