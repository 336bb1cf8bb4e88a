import { describe, expect, it } from 'vitest';
import { Holds } from './holds.js';

describe('Holds', () => {
  it('counts holds per key; each release lets go of its own hold once, however often it is called', () => {
    const h = new Holds<string>();
    const a = h.take('x');
    const b = h.take('x');
    expect([h.has('x'), h.has('y')]).toEqual([true, false]);
    a();
    a();
    expect(h.has('x')).toBe(true);
    b();
    expect(h.has('x')).toBe(false);
  });
});
