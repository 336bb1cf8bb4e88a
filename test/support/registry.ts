// Debian's docker-registry (the reference registry), started on 127.0.0.1 on a free port
// with its own storage folder, with or without htpasswd (bcrypt) auth, and stopped by the
// test. Images reach it with `skopeo copy … docker://127.0.0.1:<port>/…` over plain HTTP.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep } from './wait.js';

export interface LocalRegistry {
  /** 127.0.0.1:<port> */
  host: string;
  /** Where blobs live: docker/registry/v2/blobs/sha256/<2>/<hex>/data */
  storage: string;
  stop(): Promise<void>;
}

export function registryAvailable(): string | null {
  return spawnSync('docker-registry', ['--version']).status === 0 ? null : 'docker-registry (Debian package) is not installed';
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

/** A bcrypt htpasswd line (glibc's crypt, $2b$), as the registry's htpasswd auth reads it. */
export function htpasswdLine(user: string, password: string): string {
  const r = spawnSync('python3', ['-W', 'ignore', '-c', 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1<<4)))', password]);
  const hash = r.stdout.toString().trim();
  if (!hash.startsWith('$2')) throw new Error(`cannot make a bcrypt hash: ${r.stderr.toString()}`);
  return `${user}:${hash}\n`;
}

export async function startRegistry(auth?: { user: string; password: string }): Promise<LocalRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'zviz-registry-'));
  const storage = join(dir, 'storage');
  const port = await freePort();
  const authYaml = auth ? `auth:\n  htpasswd:\n    realm: zviz-test\n    path: ${join(dir, 'htpasswd')}\n` : '';
  if (auth) writeFileSync(join(dir, 'htpasswd'), htpasswdLine(auth.user, auth.password));
  writeFileSync(
    join(dir, 'config.yml'),
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${storage}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${authYaml}`,
  );
  const child: ChildProcess = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(`http://${host}/v2/`);
      if (r.status === 200 || r.status === 401) break;
    } catch {
      // not listening yet
    }
    if (i > 100 || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`docker-registry did not start: ${stderr}`);
    }
    await sleep(50);
  }
  return {
    host,
    storage,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(3000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
