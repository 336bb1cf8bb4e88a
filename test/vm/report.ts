// The VM job's verdict on a vitest JSON report (--reporter=json): counts, and every test that
// failed or was skipped. Inside the VM a skip is a failure — the point of the job is that the
// v2 and AppArmor tests run — except a test whose suite title says it is for cgroup v1 only
// ("not v1"): those run on the v1 hosts instead.
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

/** Suites skipped by design on a v2 host: their title names the v1 condition. */
export const V1_ONLY = /cgroup driver is v2, not v1/;

export interface Verdict {
  passed: number;
  failed: number;
  skipped: number;
  /** Skips that are by design (V1_ONLY). */
  skippedV1Only: number;
  problems: string[];
}

export function judge(report: VitestJson): Verdict {
  const v: Verdict = { passed: 0, failed: 0, skipped: 0, skippedV1Only: 0, problems: [] };
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
        if (V1_ONLY.test(a.fullName)) v.skippedV1Only++;
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
    `vm report: ${v.passed} passed, ${v.failed} failed, ${v.skipped} skipped (${v.skippedV1Only} of them cgroup-v1-only suites, which run on v1 hosts)\n`,
  );
  return v.problems.length === 0 ? 0 : 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main();
