// Commands a test runs on the host (ip, nft, mount, …): one that must succeed, one for
// probes and clean-up that never throws, and which programs the host lacks.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Which of these programs no directory of PATH has (a suite names them when it skips). */
export function missingPrograms(...programs: string[]): string[] {
  const dirs = (process.env.PATH ?? '/usr/bin:/bin').split(delimiter);
  return programs.filter((p) => !dirs.some((d) => existsSync(join(d, p))));
}

/** Runs a command that must succeed; the error names it and shows what it said. */
export function sh(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 15_000 });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Like sh() but never throws: for clean-up and probes. */
export function trySh(cmd: string, args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 15_000 });
  return { status: r.error ? null : r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

/** What a command printed when it succeeded, else ''. */
export function output(cmd: string, args: string[]): string {
  const r = trySh(cmd, args);
  return r.status === 0 ? r.stdout : '';
}
