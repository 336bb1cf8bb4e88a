// The VM job's verdict on a vitest JSON report (--reporter=json): counts, and every test that
// failed or was skipped. Inside the VM a skip is a failure — the point of the job is that the
// v2 and AppArmor tests run — except where the title names why by design (EXPECTED_SKIPS).
//   node dist/test/vm/report.js REPORT.json
import { readFileSync } from 'node:fs';
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
 * Skips by design, named in the title: suites for cgroup v1 (they run on v1 hosts), and
 * tests of Landlock rights newer than the VM's kernel, and the refusal meant for hosts without AppArmor.
 */
export const EXPECTED_SKIPS = [
  /cgroup driver is v2, not v1/,
  /\[needs Landlock ABI (≥ )?\d+: this (kernel|host) has \d+\]/,
  // The refusal of an AppArmor profile on a host without AppArmor: the VM has AppArmor.
  /\[this host: AppArmor on: the refusal does not apply\]/,
];

export interface Verdict {
  passed: number;
  failed: number;
  skipped: number;
  /** Skips that are by design (EXPECTED_SKIPS). */
  skippedByDesign: number;
  problems: string[];
}

export function judge(report: VitestJson): Verdict {
  const v: Verdict = { passed: 0, failed: 0, skipped: 0, skippedByDesign: 0, problems: [] };
  for (const file of report.testResults) {
    if (file.assertionResults.length === 0 && file.status === 'failed') {
      v.problems.push(`file failed before any test: ${file.name}: ${(file.message ?? '').split('\n')[0]}`);
    }
    for (const a of file.assertionResults) {
      if (a.status === 'passed') v.passed++;
      else if (a.status === 'failed') {
        v.failed++;
        v.problems.push(`failed: ${a.fullName}`);
      } else {
        v.skipped++;
        if (EXPECTED_SKIPS.some((r) => r.test(a.fullName))) v.skippedByDesign++;
        else v.problems.push(`skipped (a skip in the VM is a failure): ${a.fullName}`);
      }
    }
  }
  return v;
}

function main(): number {
  const path = process.argv[2];
  if (!path) {
    process.stderr.write('usage: report.js REPORT.json\n');
    return 2;
  }
  const v = judge(JSON.parse(readFileSync(path, 'utf8')) as VitestJson);
  for (const p of v.problems) process.stdout.write(`vm report: ${p}\n`);
  process.stdout.write(
    `vm report: ${v.passed} passed, ${v.failed} failed, ${v.skipped} skipped (${v.skippedByDesign} by design: cgroup-v1-only suites, Landlock rights newer than this kernel, the no-AppArmor refusal)\n`,
  );
  return v.problems.length === 0 ? 0 : 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main();
