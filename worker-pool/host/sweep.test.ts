// Where `zviz sweep` looks for leftovers, over a fake cgroup tree: no cgroup of this
// machine is read.
import { describe, expect, it } from 'vitest';
import { findCgroupParents } from './sweep.js';

describe('zviz sweep: where leftovers can be', () => {
  it('finds every zviz folder in every cgroup hierarchy, freezer first, without entering sandboxes', () => {
    const mountinfo = [
      '30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw',
      '31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
      '32 25 0:28 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer',
      '33 25 0:29 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices',
      '34 25 0:30 / /proc rw - proc proc rw',
    ].join('\n');
    const tree: Record<string, string[]> = {
      '/sys/fs/cgroup/unified': ['system.slice'],
      '/sys/fs/cgroup/unified/system.slice': ['zviz.service', 'zviz-api.service'],
      // A unit named zviz-…: not a name ZViz makes, so a server running in it is found.
      '/sys/fs/cgroup/unified/system.slice/zviz-api.service': ['zviz'],
      '/sys/fs/cgroup/unified/system.slice/zviz.service': ['zviz', 'zviz-server'],
      '/sys/fs/cgroup/memory': ['a', 'zviz'],
      '/sys/fs/cgroup/memory/a': ['zviz'],
      '/sys/fs/cgroup/freezer': ['zviz'],
      '/sys/fs/cgroup/devices': ['zviz'],
    };
    const plans = findCgroupParents(mountinfo, (d) => tree[d] ?? []);
    expect(plans).toEqual([
      expect.objectContaining({
        driver: 'v1',
        parents: [
          { controllers: ['freezer'], parent: '/sys/fs/cgroup/freezer/zviz' },
          { controllers: ['memory'], parent: '/sys/fs/cgroup/memory/a/zviz' },
          { controllers: ['memory'], parent: '/sys/fs/cgroup/memory/zviz' },
        ],
      }),
      expect.objectContaining({
        driver: 'v2',
        parents: [
          { controllers: ['unified'], parent: '/sys/fs/cgroup/unified/system.slice/zviz.service/zviz' },
          { controllers: ['unified'], parent: '/sys/fs/cgroup/unified/system.slice/zviz-api.service/zviz' },
        ],
      }),
    ]);
  });
});
