// Which cgroup folder names are ZViz's: the one predicate the sweep and the leftover checks share.
import { describe, expect, it } from 'vitest';
import { CGROUP_PARENT, isZvizCgroupName, sandboxCgroup, sandboxId, SERVER_LEAF } from './names.js';

describe('isZvizCgroupName', () => {
  it.each([CGROUP_PARENT, SERVER_LEAF, sandboxCgroup(sandboxId('abc123', '', 4242)), 'zviz-1-bench-cold-7'])('%s is a name ZViz creates', (name) => {
    expect(isZvizCgroupName(name)).toBe(true);
  });

  it.each(['zviz.service', 'zviz-api.service', 'zviz.slice', 'zvizd', 'zviz-', 'zviz-42', 'zviz-x-1', 'my-zviz'])(
    '%s is not one (a unit or folder someone else named)',
    (name) => {
      expect(isZvizCgroupName(name)).toBe(false);
    },
  );
});
