import { describe, expect, it } from 'vitest';
import { JsonLogger } from './log.js';

function capture(level?: 'debug' | 'info' | 'warn' | 'error') {
  const lines: string[] = [];
  const log = new JsonLogger({ level, write: (l) => lines.push(l), now: () => new Date(0) });
  return { log, lines };
}

describe('JsonLogger', () => {
  it('writes one JSON object per line: level, ISO time, the fields, msg', () => {
    const { log, lines } = capture();
    log.info('invoke', { id: 'a', durationMs: 1.5 });
    expect(lines).toEqual(['{"level":"info","time":"1970-01-01T00:00:00.000Z","id":"a","durationMs":1.5,"msg":"invoke"}']);
  });

  it('drops lines below its level', () => {
    const { log, lines } = capture('warn');
    log.debug('a');
    log.info('b');
    log.warn('c');
    log.error('d');
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['c', 'd']);
  });

  it('does not let a field forge time, level or msg', () => {
    const { log, lines } = capture();
    log.info('real', { msg: 'forged', level: 'error', time: 'never' });
    expect(lines[0]).not.toContain('forged');
    expect(JSON.parse(lines[0] ?? '')).toEqual({ time: '1970-01-01T00:00:00.000Z', level: 'info', msg: 'real' });
  });

  it('keeps an error stack and survives a circular field', () => {
    const { log, lines } = capture();
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    log.error('boom', { error: new Error('bad') });
    log.error('loop', { circular });
    expect(JSON.parse(lines[0] ?? '').error).toMatchObject({ name: 'Error', message: 'bad', stack: expect.stringContaining('Error: bad') });
    expect(JSON.parse(lines[1] ?? '')).toMatchObject({ msg: 'loop', circular: { self: expect.anything() } });
  });

  it('keeps an error nested in a plain field, and writes a field-only line as given', () => {
    const { log, lines } = capture();
    log.warn('nested', { ctx: { error: new Error('deep') }, n: 1 });
    log.info('plain', { id: 'x', tags: ['a'], ok: true, none: null });
    expect(JSON.parse(lines[0] ?? '').ctx.error).toMatchObject({ name: 'Error', message: 'deep' });
    expect(lines[1]).toBe('{"level":"info","time":"1970-01-01T00:00:00.000Z","id":"x","tags":["a"],"ok":true,"none":null,"msg":"plain"}');
  });
});
