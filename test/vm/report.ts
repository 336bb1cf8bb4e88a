// The VM job's verdict on a vitest JSON report (--reporter=json) and on the list of what the
// suites left out (test/support/applies.ts, ZVIZ_TEST_LEAVE_OUT): counts, every test that
// failed or was skipped, and what was left out. Inside the VM a skip is a failure — the
// point of the job is that the v2 and AppArmor tests run. What cannot apply on this kernel
// is not defined there at all, and may be left out only for the reasons by design
// (MAY_BE_LEFT_OUT); anything else left out fails the job too.
//   node dist/test/vm/report.js [--left-out LEFT-OUT.txt] [--selected REGEX] REPORT.json…
// (REGEX: the run's vitest -t filter; the tests it did not select are counted apart)
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface Assertion {
  fullName: string;
  ancestorTitles?: string[];
  status: string;
}
interface VitestJson {
  testResults: Array<{ name: string; status: string; message?: string; assertionResults: Assertion[] }>;
}

/**
 * What the VM's kernel cannot show, by design: the cgroup v1 suites (they run on v1 hosts),
 * Landlock rights newer than the kernel's ABI, and the refusal meant for hosts without AppArmor.
 */
export const MAY_BE_LEFT_OUT = [
  /\[this host's cgroup driver is v2, not v1\]$/,
  /\[needs Landlock ABI ≥ \d+: this kernel has \d+\]$/,
  /\[this host: AppArmor on: the refusal does not apply\]$/,
];

export interface Verdict {
  passed: number;
  failed: number;
  skipped: number;
  /** Tests the run's name filter (vitest -t) did not select: vitest reports them as skipped. */
  notSelected: number;
  /** Blocks and tests not defined here (each once), with the reason in brackets. */
  leftOut: string[];
  problems: string[];
}

/** `selected`: the name filter the run was given (vitest -t), matched against full names as vitest does. */
export function judge(report: VitestJson, leftOutLines: string[] = [], selected: RegExp | null = null): Verdict {
  const leftOut = [...new Set(leftOutLines.filter((l) => l.trim() !== ''))];
  const v: Verdict = { passed: 0, failed: 0, skipped: 0, notSelected: 0, leftOut, problems: [] };
  for (const file of report.testResults) {
    if (file.assertionResults.length === 0 && file.status === 'failed') {
      v.problems.push(`file failed before any test: ${file.name}: ${(file.message ?? '').split('\n')[0]}`);
    }
    for (const a of file.assertionResults) {
      if (a.status === 'passed') v.passed++;
      else if (a.status === 'failed') {
        v.failed++;
        v.problems.push(`failed: ${a.fullName}`);
      } else if (selected && !selected.test(a.fullName)) {
        v.notSelected++;
      } else {
        v.skipped++;
        v.problems.push(`skipped (a skip in the VM is a failure): ${a.fullName}`);
      }
    }
  }
  for (const l of leftOut) {
    if (!MAY_BE_LEFT_OUT.some((r) => r.test(l))) v.problems.push(`left out, but it should apply in the VM: ${l}`);
  }
  return v;
}

function main(): number {
  const args = process.argv.slice(2);
  let leftOutPath: string | null = null;
  let selected: RegExp | null = null;
  while (args[0] === '--left-out' || args[0] === '--selected') {
    const [flag, value = ''] = args.splice(0, 2);
    if (flag === '--left-out') leftOutPath = value;
    else selected = new RegExp(value);
  }
  if (args.length === 0 || leftOutPath === '') {
    process.stderr.write('usage: report.js [--left-out LEFT-OUT.txt] [--selected REGEX] REPORT.json…\n');
    return 2;
  }
  const report: VitestJson = { testResults: args.flatMap((p) => (JSON.parse(readFileSync(p, 'utf8')) as VitestJson).testResults) };
  const lines = leftOutPath && existsSync(leftOutPath) ? readFileSync(leftOutPath, 'utf8').split('\n') : [];
  const v = judge(report, lines, selected);
  for (const l of v.leftOut) process.stdout.write(`vm report: left out, cannot apply on this kernel: ${l}\n`);
  for (const p of v.problems) process.stdout.write(`vm report: ${p}\n`);
  process.stdout.write(`vm report: ${v.passed} passed, ${v.failed} failed, ${v.skipped} skipped; ${v.leftOut.length} blocks or tests left out (listed above)${selected ? `; ${v.notSelected} not selected by the job's filter` : ''}\n`);
  return v.problems.length === 0 ? 0 : 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main();
