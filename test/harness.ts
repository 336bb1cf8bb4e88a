// Test harness for suites that need a real server (integration) or real sandboxes
// (privileged). Starts the built server (dist/) on an ephemeral loopback port with its
// own state directory, and checks that nothing of ZViz is left on the host afterwards.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const serverEntry = join(repoRoot, 'dist', 'server', 'main.js');

/** Why privileged suites cannot run here, or null if they can. */
export function privilegedUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'privileged tests need root';
  if (!existsSync(serverEntry)) return `server not built (${serverEntry} missing): run \`npm run build\``;
  if (!existsSync(join(repoRoot, 'native', 'build', 'zviz-supervisor'))) return 'native/ not built';
  return null;
}

/**
 * describe() for privileged suites: skips with the reason when the host cannot run them,
 * unless ZVIZ_MUST_WORK=1 (CI), where a skip would hide a failure: then it fails.
 */
export function privilegedReason(): string | null {
  const why = privilegedUnavailable();
  if (why && process.env.ZVIZ_MUST_WORK === '1') {
    throw new Error(`Privileged suite cannot run but ZVIZ_MUST_WORK=1: ${why}`);
  }
  return why;
}

export interface RunningServer {
  url: string;
  pid: number;
  stateDir: string;
  logs: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
  post: (path: string, body: unknown, headers?: Record<string, string>) => Promise<{ status: number; body: any }>;
  invoke: (body: Record<string, unknown>) => Promise<any>;
}

export interface StartOptions {
  env?: Record<string, string>;
  /** Use the ASan + UBSan build of the supervisor. */
  asan?: boolean;
}

export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const stateDir = mkdtempSync(join(tmpdir(), 'zviz-test-'));
  let out = '';
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ZVIZ_HOST: '127.0.0.1',
    ZVIZ_PORT: '0',
    ZVIZ_STATE_DIR: stateDir,
    ZVIZ_LOG_LEVEL: 'info',
    ...(opts.asan ? { ZVIZ_NATIVE_DIR: join(repoRoot, 'native', 'build-asan'), ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1' } : {}),
    ...opts.env,
  };
  const child: ChildProcess = spawn(process.execPath, [serverEntry], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));

  const url = await new Promise<string>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`server did not start within 20 s:\n${out}`)), 20_000);
    const check = (): void => {
      const m = /"msg":"listening","url":"([^"]+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        res(m[1]!);
      }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`server exited with ${code} before listening:\n${out}`));
    });
  });

  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const r = await fetch(url + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // keep the text
    }
    return { status: r.status, body: parsed as any };
  };

  return {
    url,
    pid: child.pid!,
    stateDir,
    logs: () => out,
    post,
    invoke: async (body) => {
      const r = await post('/invoke', body);
      if (r.status !== 200) throw new Error(`invoke returned ${r.status}: ${JSON.stringify(r.body)}`);
      return r.body;
    },
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      rmSync(stateDir, { recursive: true, force: true });
      return code;
    },
  };
}

/** Everything of ZViz visible on the host: cgroup folders, supervisor processes, mounts. */
export function hostLeftovers(): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number): void => {
    if (depth > 6) return;
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = join(dir, e.name);
      if (e.name.startsWith('zviz')) found.push(`cgroup ${p}`);
      walk(p, depth + 1);
    }
  };
  walk('/sys/fs/cgroup', 0);
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('zviz-supervisor')) found.push(`process ${pid} ${cmd.replace(/\0/g, ' ')}`);
    } catch {
      // gone
    }
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line.includes('zviz')) found.push(`mount ${line}`);
  }
  return found;
}
