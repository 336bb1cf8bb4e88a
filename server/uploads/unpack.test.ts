import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tarArchive, tarGz, zipArchive, type TarItem, type ZipItem } from '../../test/support/archives.js';
import { ApiError } from '../http/errors.js';
import { unpackArchive } from './unpack.js';

const scratch = mkdtempSync(join(tmpdir(), 'zviz-unpack-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let n = 0;
const limits = { maxBytes: 1 << 20, maxEntries: 1000 };

async function unpack(bytes: Buffer, reserved: string[] = ['.zviz']): Promise<string> {
  const file = join(scratch, `a${++n}`);
  writeFileSync(file, bytes);
  const dest = join(scratch, `d${n}`);
  mkdirSync(dest);
  await unpackArchive(file, dest, { limits, reserved });
  return dest;
}

async function refusal(bytes: Buffer): Promise<ApiError> {
  const e = await unpack(bytes).then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ApiError);
  return e as ApiError;
}

describe('unpackArchive', () => {
  const good: TarItem[] = [
    { name: 'main.js', content: 'module.exports = 1' },
    { name: 'node_modules/', type: 'dir' },
    { name: 'node_modules/pad/index.js', content: 'x', mode: 0o600 },
    { name: 'node_modules/.bin/pad', type: 'symlink', linkname: '../pad/index.js' },
    { name: 'bin/run', content: '#!/bin/sh', mode: 0o700 },
    { name: 'copy.js', type: 'hardlink', linkname: 'main.js' },
  ];

  it('unpacks a tar.gz: files, directories, links inside the tree, modes normalized', async () => {
    const d = await unpack(tarGz(good));
    expect(readFileSync(join(d, 'main.js'), 'utf8')).toBe('module.exports = 1');
    expect(readlinkSync(join(d, 'node_modules/.bin/pad'))).toBe('../pad/index.js');
    expect(statSync(join(d, 'node_modules/pad/index.js')).mode & 0o777).toBe(0o644);
    expect(statSync(join(d, 'bin/run')).mode & 0o777).toBe(0o755);
    expect(statSync(join(d, 'copy.js')).ino).toBe(statSync(join(d, 'main.js')).ino);
  });

  it('unpacks a plain tar and a zip', async () => {
    const t = await unpack(tarArchive([{ name: 'a.py', content: 'A' }]));
    expect(readFileSync(join(t, 'a.py'), 'utf8')).toBe('A');
    const z = await unpack(
      zipArchive([
        { name: 'main.py', content: 'M' },
        { name: 'vendor/', unixMode: 0o040755 },
        { name: 'vendor/lib.py', content: 'L', unixMode: 0o100755 },
        { name: 'link', content: 'vendor/lib.py', unixMode: 0o120777 },
      ]),
    );
    expect(readFileSync(join(z, 'vendor/lib.py'), 'utf8')).toBe('L');
    expect(statSync(join(z, 'vendor/lib.py')).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(z, 'link'))).toBe('vendor/lib.py');
  });

  // Each hostile case is refused with 400 ARCHIVE_REFUSED naming the entry.
  const hostileTar: Array<[string, TarItem[], string, RegExp]> = [
    ['../ traversal', [{ name: '../evil.js', content: 'x' }], '../evil.js', /'\.\.' component/],
    ['nested traversal', [{ name: 'a/../../evil.js', content: 'x' }], 'a/../../evil.js', /'\.\.' component/],
    ['absolute path', [{ name: '/etc/cron.d/evil', content: 'x' }], '/etc/cron.d/evil', /absolute path/],
    ['symlink out (absolute)', [{ name: 'etc', type: 'symlink', linkname: '/etc' }], 'etc', /points out/],
    ['symlink out (relative)', [{ name: 'a/up', type: 'symlink', linkname: '../../x' }], 'a/up', /points out/],
    [
      'symlink chain that escapes',
      [
        { name: 'self', type: 'symlink', linkname: '.' },
        { name: 'esc', type: 'symlink', linkname: 'self/self/..' },
      ],
      'esc',
      /through the symlink 'self'/,
    ],
    [
      'symlink then write through it',
      [
        { name: 'd', type: 'symlink', linkname: 'x' },
        { name: 'd/file', content: 'x' },
      ],
      'd/file',
      /inside 'd', which is a symlink/,
    ],
    ['hard link out', [{ name: 'shadow', type: 'hardlink', linkname: '/etc/shadow' }], 'shadow', /hard link to an absolute path/],
    ['hard link up', [{ name: 'shadow', type: 'hardlink', linkname: '../../etc/shadow' }], 'shadow', /points out/],
    ['character device', [{ name: 'null', type: 'char' }], 'null', /device node/],
    ['block device', [{ name: 'sda', type: 'block' }], 'sda', /device node/],
    ['fifo', [{ name: 'pipe', type: 'fifo' }], 'pipe', /FIFO/],
    ['setuid', [{ name: 'su', content: 'x', mode: 0o4755 }], 'su', /setuid/],
    ['setgid', [{ name: 'sg', content: 'x', mode: 0o2755 }], 'sg', /setgid/],
    ['reserved name', [{ name: '.zviz/bootstrap-node.js', content: 'x' }], '.zviz/bootstrap-node.js', /reserved name/],
    [
      'duplicate',
      [
        { name: 'a.js', content: 'x' },
        { name: 'a.js', content: 'y' },
      ],
      'a.js',
      /twice/,
    ],
  ];
  for (const [what, items, entry, why] of hostileTar) {
    it(`refuses a tar.gz with ${what}, naming the entry`, async () => {
      const e = await refusal(tarGz(items));
      expect(e.code).toBe('ARCHIVE_REFUSED');
      expect(e.status).toBe(400);
      expect((e.details as { entry: string }).entry).toBe(entry);
      expect(e.message).toMatch(why);
    });
  }

  const hostileZip: Array<[string, ZipItem[], string, RegExp]> = [
    ['../ traversal', [{ name: '../evil.py', content: 'x' }], '../evil.py', /'\.\.' component/],
    ['absolute path', [{ name: '/tmp/evil', content: 'x' }], '/tmp/evil', /absolute path/],
    ['backslash path', [{ name: '..\\evil', content: 'x' }], '..\\evil', /backslash/],
    ['symlink out', [{ name: 'etc', content: '/etc', unixMode: 0o120777 }], 'etc', /points out/],
    ['device node', [{ name: 'null', unixMode: 0o020666 }], 'null', /device node/],
    ['setuid', [{ name: 'su', content: 'x', unixMode: 0o104755 }], 'su', /setuid/],
  ];
  for (const [what, items, entry, why] of hostileZip) {
    it(`refuses a zip with ${what}, naming the entry`, async () => {
      const e = await refusal(zipArchive(items));
      expect(e.code).toBe('ARCHIVE_REFUSED');
      expect((e.details as { entry: string }).entry).toBe(entry);
      expect(e.message).toMatch(why);
    });
  }

  it('refuses an archive that unpacks over the size cap (a bomb), before writing anything', async () => {
    const big = Buffer.alloc(limits.maxBytes + 1, 0x61);
    const e = await refusal(tarGz([{ name: 'big', content: big }]));
    expect(e.message).toMatch(/unpacked size over/);
  });

  it('refuses what is not an archive', async () => {
    const e = await refusal(Buffer.from('hello, not an archive'));
    expect(e.message).toMatch(/not a \.tar, \.tar\.gz or \.zip/);
  });
});
