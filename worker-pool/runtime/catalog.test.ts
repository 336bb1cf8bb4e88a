import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, symlinkSync } from 'node:fs';
import { availableHere, CatalogError, compileArgv, compiledRunArgv, DEFAULT_CATALOG_DIR, imageRootState, loadCatalog, type Language } from './catalog.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function catalogOf(files: Record<string, unknown>): string {
  const d = mkdtempSync(join(tmpdir(), 'zviz-catalog-'));
  dirs.push(d);
  for (const [name, v] of Object.entries(files)) writeFileSync(join(d, name), typeof v === 'string' ? v : JSON.stringify(v));
  return d;
}

const limits = { timeoutMs: 1000, memoryMb: 256, pids: 8, cpus: 1, outputBytes: 1024 };
const rust = { name: 'rust', version: '1.75', root: { image: 'docker.io/library/rust:1.75' }, source: 'main.rs', syscalls: 'image', compile: { argv: ['/usr/local/cargo/bin/rustc', '-o', '{output}', '{source}'], limits }, run: { argv: ['{output}'] } };

describe('the language catalog', () => {
  it('ships node, python, bash, c and cpp; c and cpp compile with the host gcc', () => {
    const c = loadCatalog();
    expect([...c.keys()].sort()).toEqual(['bash', 'c', 'cpp', 'node', 'python']);
    expect(c.get('cpp')!.compile!.argv[0]).toBe('/usr/bin/g++');
    const tools = ['/usr/bin/g++', '/bin/sh', '/usr/bin/base64', '/usr/bin/chmod'];
    expect(availableHere(c.get('cpp')!, (p) => tools.includes(p))).toBe(true);
    expect(availableHere(c.get('cpp')!, (p) => p !== '/usr/bin/base64')).toBe(false); // the compile step's wrapper needs it
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

  it("an image root is ready when its stored image has every program (symlinks followed inside the tree), pullable from an allowed registry, else unavailable with the reason", () => {
    const lang = loadCatalog(catalogOf({ 'rust.json': rust })).get('rust')! as Language;
    const rootfs = mkdtempSync(join(tmpdir(), 'zviz-catalog-root-'));
    dirs.push(rootfs);
    mkdirSync(join(rootfs, 'usr/bin'), { recursive: true });
    mkdirSync(join(rootfs, 'usr/local/cargo/bin'), { recursive: true });
    symlinkSync('/usr/bin', join(rootfs, 'bin')); // absolute, as merged-/usr images have: resolved in the tree
    for (const f of ['usr/bin/sh', 'usr/bin/base64', 'usr/local/cargo/bin/rustc']) writeFileSync(join(rootfs, f), '');
    const digest = `sha256:${'a'.repeat(64)}`;
    const store = (stored: boolean, registries: string[] = []) => ({
      find: (ref: string) => (stored && ref === 'docker.io/library/rust:1.75' ? ({ digest } as never) : null),
      rootfs: () => rootfs,
      options: { registries } as never,
    });
    expect(imageRootState(lang, store(true))).toEqual({ status: 'unavailable', code: 'IMAGE_INVALID', reason: `its image docker.io/library/rust:1.75 (${digest}) lacks /usr/bin/chmod` });
    writeFileSync(join(rootfs, 'usr/bin/chmod'), '');
    expect(imageRootState(lang, store(true))).toEqual({ status: 'ready', digest });
    expect(imageRootState(lang, store(false, ['docker.io']))).toEqual({ status: 'pullable' });
    const denied = imageRootState(lang, store(false));
    expect(denied).toMatchObject({ status: 'unavailable', code: 'REGISTRY_NOT_ALLOWED' });
    expect(imageRootState(lang, null)).toMatchObject({ status: 'unavailable', code: 'IMAGE_NOT_FOUND' });
  });

  it('refuses bad definitions, one line per problem naming the file and field', () => {
    const dir = catalogOf({
      'a.json': { ...rust, name: 'a', extra: 1 },
      'b.json': { ...rust, name: 'other' },
      'node.json': { name: 'node', version: 'x', root: 'host', source: 'main.js', syscalls: 'node', run: { argv: ['/usr/bin/nodejs', '{source}'] } },
      'd.json': { ...rust, name: 'd', compile: undefined },
      'f.json': { ...rust, name: 'f', compile: undefined, run: { argv: ['/usr/bin/ruby', '{source}'] } },
      'g.json': { ...rust, name: 'g', syscalls: 'bash' },
      'h.json': { name: 'h', version: '1', root: 'host', source: 'main.h', syscalls: 'image', run: { argv: ['/usr/bin/h', '{source}'] } },
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
    for (const f of ['g.json', 'h.json']) expect(lines.some((l) => l.includes(f) && l.includes("'syscalls' must be 'image'"))).toBe(true);
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
