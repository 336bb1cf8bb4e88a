// `node dist/test/vm/run.js [--timeout SECONDS] [--file SCRIPT | -- CMD ARGS…]`: runs a
// command (or a bash script) from this checkout in a fresh cgroup v2 + AppArmor VM
// (test/vm/vm.ts), prints its output as it comes, and exits with its status: 124 on
// timeout, 125 when the VM ended without a status or could not start.
import { fileURLToPath } from 'node:url';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';
import { runInVm, shellQuote, vmUnavailable } from './vm.js';

/** Variables the guest gets from the caller's environment when set. */
export const PASSED_ENV = ['ZVIZ_MUST_WORK', 'ZVIZ_TEST_TIME_SCALE', 'ZVIZ_VM_SUITES', 'ZVIZ_VM_SELECT', 'ZVIZ_VM_STEPS'];

export interface RunArgs {
  timeoutS: number;
  script: string;
}

export function parseRunArgs(argv: string[]): RunArgs | string {
  let timeoutS = 1800;
  let script: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      const cmd = argv.slice(i + 1);
      if (cmd.length === 0) return 'a command is required after --';
      script = cmd.map(shellQuote).join(' ');
      break;
    }
    if (a === '--timeout') {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) return `--timeout must be a positive number of seconds: current value is ${argv[i]}`;
      timeoutS = v;
    } else if (a === '--file') {
      const f = argv[++i];
      if (!f) return '--file needs a path';
      script = `source ${shellQuote(f)}`;
    } else {
      return `unknown argument '${a}'`;
    }
  }
  if (script === null) return 'usage: run.js [--timeout SECONDS] [--file SCRIPT | -- CMD ARGS…]';
  return { timeoutS, script };
}

async function main(): Promise<number> {
  const args = parseRunArgs(process.argv.slice(2));
  if (typeof args === 'string') {
    process.stderr.write(`vm: ${args}\n`);
    return 2;
  }
  const why = vmUnavailable();
  if (why) {
    process.stderr.write(`vm: cannot run: ${why}\n`);
    return 125;
  }
  const env: Record<string, string> = {};
  for (const k of PASSED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
  const r = await runInVm({
    script: args.script,
    cwd: PACKAGE_ROOT,
    env,
    timeoutMs: args.timeoutS * 1000,
    onOutput: (t) => process.stdout.write(t),
  });
  const verdict = r.timedOut ? `timed out after ${args.timeoutS} s` : r.status === null ? 'ended without an exit status' : `exit ${r.status}`;
  process.stderr.write(`vm: kernel ${r.kernel}, accelerator ${r.accel.accel} (${r.accel.why}), ${verdict}, wall ${(r.wallMs / 1000).toFixed(1)} s\n`);
  if (r.timedOut) return 124;
  return r.status ?? 125;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = await main();
