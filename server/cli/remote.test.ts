// zviz invoke and zviz deploy, up to the request they would send (no server).
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseCommandLine } from './args.js';
import { cli } from './cli.js';
import { deployRequest, parseManifest } from './deploy.js';
import { serverFrom } from './http.js';
import { INVOKE_OPTIONS, invokeBody } from './invoke.js';
import { CliError } from './io.js';
import { recordedIo } from './test-io.js';

const KEY = `zviz_0123456789abcdef_${'A'.repeat(43)}`;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(files: Record<string, string | Buffer>): string {
  const d = mkdtempSync(join(tmpdir(), 'zviz-cli-'));
  dirs.push(d);
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(d, p, '..'), { recursive: true });
    writeFileSync(join(d, p), content);
  }
  return d;
}

async function body(args: string[], stdin: string | null = null): Promise<Record<string, unknown>> {
  return invokeBody(parseCommandLine('invoke', args, INVOKE_OPTIONS), recordedIo({ stdin }));
}

async function rejects(p: Promise<unknown>): Promise<CliError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    return e as CliError;
  }
  throw new Error('expected a CliError');
}

describe('zviz invoke: the request', () => {
  it('a function with its input, version, profile and limits', async () => {
    expect(await body(['-f', 'hello', '-i', '{"name":"x"}', '--version', '3', '--memory', '128', '--timeout', '2s', '-p', 'minimal'])).toEqual({
      function: 'hello',
      input: { name: 'x' },
      version: 3,
      limits: { memoryMb: 128, timeoutMs: 2000 },
      profile: 'minimal',
    });
    expect(await body(['--function', 'hello'])).toEqual({ function: 'hello', input: null });
    expect(await body(['--function', 'hello', '--input', '-'], '[1,2]')).toEqual({ function: 'hello', input: [1, 2] });
  });

  it('inline code from a file gets our stdin (unless a terminal or --no-stdin), args and env', async () => {
    const d = tempDir({ 'main.py': 'print(1)\n' });
    const file = join(d, 'main.py');
    expect(await body(['-r', 'python', '-c', file, '-e', 'A=1', '--', 'x', 'y'], 'input')).toEqual({
      runtime: 'python',
      code: 'print(1)\n',
      stdin: 'input',
      args: ['x', 'y'],
      env: { A: '1' },
    });
    expect(await body(['-r', 'python', '-c', file], null)).toEqual({ runtime: 'python', code: 'print(1)\n' });
    expect(await body(['-r', 'python', '-c', file, '--no-stdin'], 'ignored')).toEqual({ runtime: 'python', code: 'print(1)\n' });
    expect(await body(['-r', 'bash', '-c', '-'], 'echo hi')).toEqual({ runtime: 'bash', code: 'echo hi' });
  });

  it.each([
    [[], 'Missing what to invoke: pass --function NAME, or --runtime R with --code FILE'],
    [['-f', 'a', '-r', 'bash'], 'Invalid flags: --function cannot be combined with --runtime or --code'],
    [['-f', 'Bad_Name'], 'Invalid --function: must be lower-case letters'],
    [['-f', 'a', '-i', '{x'], 'Invalid --input: must be JSON'],
    [['-f', 'a', '-e', 'A=1'], 'Invalid --env: it applies to inline code, not to --function'],
    [['-f', 'a', '--', 'x'], "Invalid arguments after '--'"],
    [['-f', 'a', '--version', '0'], 'Invalid --version: must be at least 1'],
    [['-r', 'ruby', '-c', '-'], 'Invalid --runtime: must be one of node, python, bash: current value is "ruby"'],
    [['-r', 'bash'], 'Missing --code'],
    [['-c', '/nonexistent/file.py', '-r', 'python'], 'Invalid --code: cannot read "/nonexistent/file.py": ENOENT'],
    [['-r', 'bash', '-c', '-', '-i', '1'], 'Invalid --input: it applies to --function, not to inline code'],
    [['-f', 'a', '--memory', 'lots'], 'Invalid --memory: must be a size'],
    [['-f', 'a', '--memory', '999999'], 'Invalid --memory: must be at most 65536 MiB'],
  ])('refuses %j with exit 2: %s', async (args, message) => {
    const e = await rejects(body(args, ''));
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain(message);
  });

  it('the server and key come from flags or the environment, checked, the key never echoed', () => {
    expect(serverFrom({ key: KEY }, {}).url.href).toBe('http://127.0.0.1:8080/');
    expect(serverFrom({}, { ZVIZ_URL: 'https://zviz.example', ZVIZ_KEY: KEY }).url.origin).toBe('https://zviz.example');
    expect(() => serverFrom({}, {})).toThrow('Missing API key: pass --key KEY or set ZVIZ_KEY');
    expect(() => serverFrom({ key: 'zviz_secret-but-malformed' }, {})).toThrow(/^Invalid --key: must look like .*: current value has 25 characters$/);
    expect(() => serverFrom({ key: KEY, url: 'ftp://x' }, {})).toThrow('Invalid --url');
  });

  it('an unreachable server exits 125, with --json the error on stdout', async () => {
    const io = recordedIo({ env: { ZVIZ_KEY: KEY } });
    expect(await cli(['invoke', '--url', 'http://127.0.0.1:1', '-f', 'hello', '--json'], io)).toBe(125);
    expect(JSON.parse(io.out())).toMatchObject({ error: { code: 'UNREACHABLE' } });
    expect(io.err()).toMatch(/^zviz: Cannot reach the server at http:\/\/127\.0\.0\.1:1: .*\n$/);
  });
});

describe('zviz deploy: the request', () => {
  it('a manifest and the files beside it (hidden ones and the manifest itself left out)', () => {
    const d = tempDir({
      'manifest.json': JSON.stringify({ name: 'hello', runtime: 'node', handler: 'main.js', description: 'hi', limits: { timeoutMs: 2000 } }),
      'main.js': 'exports.handler = () => 1;\n',
      'lib/util.js': 'module.exports = 2;\n',
      'lib/manifest.json': '{}',
      '.git/config': 'x',
      '.env': 'SECRET=1',
    });
    expect(deployRequest(d)).toEqual({
      name: 'hello',
      body: {
        runtime: 'node',
        handler: 'main.js',
        limits: { timeoutMs: 2000 },
        files: { 'lib/manifest.json': '{}', 'lib/util.js': 'module.exports = 2;\n', 'main.js': 'exports.handler = () => 1;\n' },
      },
    });
  });

  it.each([
    ['{', 'not JSON'],
    ['{"name":"Hello","runtime":"node","handler":"main.js"}', "field 'name' must be lower-case letters"],
    ['{"name":"h","runtime":"ruby","handler":"main.js"}', "field 'runtime'"],
    ['{"name":"h","runtime":"node","handler":"main.js","colour":"red"}', "field 'colour' is not a manifest field"],
  ])('a bad manifest is named with the field and value: %s', (text, message) => {
    expect(() => parseManifest('dir/manifest.json', text)).toThrow(message);
  });

  it('refuses links, binary files, an empty directory and a directory without manifest', () => {
    const manifest = JSON.stringify({ name: 'h', runtime: 'node', handler: 'main.js' });
    const linked = tempDir({ 'manifest.json': manifest, 'main.js': 'x' });
    symlinkSync('/etc/passwd', join(linked, 'passwd'));
    expect(() => deployRequest(linked)).toThrow('"passwd" is not a regular file');
    expect(() => deployRequest(tempDir({ 'manifest.json': manifest, 'main.js': 'x', 'logo.png': Buffer.from([0xff, 0xd8, 0xff]) }))).toThrow(
      '"logo.png" is not UTF-8 text',
    );
    expect(() => deployRequest(tempDir({ 'manifest.json': manifest }))).toThrow('it has no files besides manifest.json');
    expect(() => deployRequest(tempDir({ 'main.js': 'x' }))).toThrow('has no manifest.json');
  });

  it('takes exactly one DIR', async () => {
    const io = recordedIo({ env: { ZVIZ_KEY: KEY } });
    expect(await cli(['deploy'], io)).toBe(2);
    expect(io.err()).toBe('zviz: Missing DIR: usage is zviz deploy [options] DIR\n');
  });
});

describe('zviz invoke: routing header', () => {
  // A load balancer hashing on it (deploy/haproxy/haproxy.cfg) sends a function to the hosts of its warm pool.
  it('names the deployed function in X-ZViz-Function, and sends none for inline code', async () => {
    const { createServer } = await import('node:http');
    const seen: Array<string | undefined> = [];
    const server = createServer((req, res) => {
      seen.push(req.headers['x-zviz-function'] as string | undefined);
      req.resume();
      req.on('end', () => {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'SHUTTING_DOWN', message: 'test' } }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const { port } = server.address() as import('node:net').AddressInfo;
      const env = { ZVIZ_URL: `http://127.0.0.1:${port}`, ZVIZ_KEY: KEY };
      await cli(['invoke', '--function', 'hello'], recordedIo({ env, stdin: null }));
      await cli(['invoke', '--runtime', 'bash', '--code', '-'], recordedIo({ env, stdin: 'echo hi' }));
      expect(seen).toEqual(['hello', undefined]);
    } finally {
      server.close();
    }
  });
});
