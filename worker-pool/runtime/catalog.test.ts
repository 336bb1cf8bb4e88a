import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { availableHere, CatalogError, compileArgv, compiledRunArgv, DEFAULT_CATALOG_DIR, loadCatalog } from './catalog.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function catalogOf(files: Record<string, unknown>): string {
  const d = mkdtempSync(join(tmpdir(), 'zviz-catalog-'));
  dirs.push(d);
  for (const [name, v] of Object.entries(files)) writeFileSync(join(d, name), typeof v === 'string' ? v : JSON.stringify(v));
  return d;
}

const limits = { timeoutMs: 1000, memoryMb: 256, pids: 8, cpus: 1, outputBytes: 1024 };
const rust = { name: 'rust', version: '1.75', root: { image: 'docker.io/library/rust:1.75' }, source: 'main.rs', syscalls: 'bash', compile: { argv: ['/usr/local/cargo/bin/rustc', '-o', '{output}', '{source}'], limits }, run: { argv: ['{output}'] } };

describe('the language catalog', () => {
  it('ships node, python, bash, c and cpp; c and cpp compile with the host gcc', () => {
    const c = loadCatalog();
    expect([...c.keys()].sort()).toEqual(['bash', 'c', 'cpp', 'node', 'python']);
    expect(c.get('cpp')!.compile!.argv[0]).toBe('/usr/bin/g++');
    expect(availableHere(c.get('cpp')!, (p) => p === '/usr/bin/g++')).toBe(true);
    expect(availableHere(c.get('cpp')!, () => false)).toBe(false);
  });

  it('the documented image examples (java, go, rust) are valid definitions, offered only where images are', () => {
    const c = loadCatalog(join(DEFAULT_CATALOG_DIR, 'examples'));
    expect([...c.keys()].sort()).toEqual(['go', 'java', 'rust']);
    for (const l of c.values()) expect(availableHere(l, () => true)).toBe(false);
  });

  it('an image-rooted definition validates but is not available on the host root', () => {
    const c = loadCatalog(catalogOf({ 'rust.json': rust }));
    expect(availableHere(c.get('rust')!, () => true)).toBe(false);
  });

  it('refuses bad definitions, one line per problem naming the file and field', () => {
    const dir = catalogOf({
      'a.json': { ...rust, name: 'a', extra: 1 },
      'b.json': { ...rust, name: 'other' },
      'node.json': { name: 'node', version: 'x', root: 'host', source: 'main.js', syscalls: 'node', run: { argv: ['/usr/bin/nodejs', '{source}'] } },
      'd.json': { ...rust, name: 'd', compile: undefined },
      'f.json': { ...rust, name: 'f', compile: undefined, run: { argv: ['/usr/bin/ruby', '{source}'] } },
      'e.json': '{ not json',
    });
    let err: unknown;
    try {
      loadCatalog(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CatalogError);
    const lines = (err as Error).message.split('\n');
    expect(lines.some((l) => l.includes('a.json') && l.includes('extra'))).toBe(true);
    expect(lines.some((l) => l.includes('b.json') && l.includes('must equal the file name'))).toBe(true);
    expect(lines.some((l) => l.includes('node.json') && l.includes('is built in'))).toBe(true);
    expect(lines.some((l) => l.includes('d.json') && l.includes('there is no compile step'))).toBe(true);
    expect(lines.some((l) => l.includes('f.json'))).toBe(false);
    expect(lines.some((l) => l.includes('e.json') && l.includes('not JSON'))).toBe(true);
  });

  it('the compile step prints only the artifact; the run step decodes it into /tmp and passes the args', () => {
    const cpp = loadCatalog().get('cpp')!;
    expect(compileArgv(cpp)).toEqual([
      '/bin/sh',
      '-c',
      "'/usr/bin/g++' '-O2' '-std=c++17' '-o' '/tmp/program' '/fn/main.cpp' 1>&2 && exec /usr/bin/base64 -w 0 /tmp/program",
    ]);
    const run = compiledRunArgv(cpp, ["it's", 'b']);
    expect(run.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(run[2]).toContain("exec '/tmp/program' \"$@\"");
    expect(run.slice(3)).toEqual(['cpp', "it's", 'b']);
  });
});
