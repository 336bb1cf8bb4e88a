import { describe, expect, it } from 'vitest';
import { idleCoresMeter } from './pool.js';

const cpu = (idle: number, busy: number) => ({ times: { idle, user: busy, nice: 0, sys: 0, irq: 0 } });

describe('idleCoresMeter', () => {
  it('reports the cores idle between two calls, from per-CPU times', () => {
    const samples = [
      [cpu(0, 0), cpu(0, 0)],
      // One core idle all along, the other busy all along.
      [cpu(100, 0), cpu(0, 100)],
      // Both busy.
      [cpu(100, 100), cpu(0, 200)],
    ];
    let i = 0;
    const idle = idleCoresMeter(() => samples[i++]!);
    expect(idle()).toBeCloseTo(1);
    expect(idle()).toBeCloseTo(0);
  });

  it('no time passed: no idle core', () => {
    const same = [cpu(5, 5)];
    const idle = idleCoresMeter(() => same);
    expect(idle()).toBe(0);
  });
});
