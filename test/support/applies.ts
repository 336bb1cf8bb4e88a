// Tests that apply only on some machines: a cgroup driver, a Landlock ABI, an LSM (the facts
// come from machine.ts). On a host where one cannot apply it skips, its title naming the
// condition, as every skip here must. Where a skip is a failure and the machine is known
// not to offer the condition — the cgroup v2 + AppArmor VM job, which sets
// ZVIZ_TEST_LEAVE_OUT=FILE — it is not defined at all: its title and the reason go to FILE
// as one line, and the job prints the list once and judges it (test/vm/report.ts).
//
// Only facts of the machine belong here. Why a privileged suite cannot run at all (not
// root, not built) stays a skip, which ZVIZ_MUST_WORK=1 turns into a failure.
import { appendFileSync } from 'node:fs';
import { describe, it } from 'vitest';
import { getCurrentSuite } from 'vitest/suite';

/** The variable naming the file that collects what was left out (unset: skip instead). */
export const LEAVE_OUT_ENV = 'ZVIZ_TEST_LEAVE_OUT';

/** Writes one left-out line when leaving out is on; whether the test or block is left out. */
function leftOut(notHere: string | null, title: string): boolean {
  const file = process.env[LEAVE_OUT_ENV];
  if (notHere === null || !file) return false;
  const parent = getCurrentSuite()?.name;
  appendFileSync(file, `${parent ? `${parent} > ` : ''}${title} [${notHere}]\n`);
  return true;
}

/**
 * describe() for a block that applies only where `notHere` (why not, on this machine) is
 * null. `skip` is why the whole suite cannot run (privilegedReason()): always a skip.
 */
export function describeWhere(notHere: string | null, title: string, fn: () => void, skip: string | null = null): void {
  if (skip === null && leftOut(notHere, title)) return;
  const why = skip ?? notHere;
  describe.skipIf(why !== null)(why !== null ? `${title} [${why}]` : title, fn);
}

/** it() for a test that applies only where `notHere` is null (see describeWhere). */
export function itWhere(notHere: string | null, title: string, fn: () => Promise<void> | void, timeout?: number): void {
  if (leftOut(notHere, title)) return;
  it.skipIf(notHere !== null)(notHere !== null ? `${title} [${notHere}]` : title, fn, timeout);
}
