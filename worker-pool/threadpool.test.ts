import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_SANDBOXES, DEFAULT_WARM_MAX, sizeThreadpool, startedThreadpoolSize, threadpoolSize, threadpoolSizeFor } from './threadpool.cjs';

describe('threadpoolSize', () => {
  it('gives each running sandbox a thread for its run and one for its teardown, plus the warm budget and a margin', () => {
    expect(threadpoolSize(8, 0)).toBe(20);
    expect(threadpoolSize(32, 16)).toBe(84);
  });

  it("stays within libuv's cap of 1024", () => {
    expect(threadpoolSize(1024, 1024)).toBe(1024);
  });

  it('reads ZVIZ_MAX_SANDBOXES and ZVIZ_WARM_MAX, with the configuration defaults where unset or not a number', () => {
    expect(threadpoolSizeFor({})).toBe(threadpoolSize(DEFAULT_MAX_SANDBOXES, DEFAULT_WARM_MAX));
    expect(threadpoolSizeFor({ ZVIZ_MAX_SANDBOXES: '8', ZVIZ_WARM_MAX: '0' })).toBe(20);
    expect(threadpoolSizeFor({ ZVIZ_MAX_SANDBOXES: 'many' })).toBe(threadpoolSize(DEFAULT_MAX_SANDBOXES, DEFAULT_WARM_MAX));
  });

  it("sets UV_THREADPOOL_SIZE when unset and keeps an operator's own value", () => {
    const env: NodeJS.ProcessEnv = { ZVIZ_MAX_SANDBOXES: '8', ZVIZ_WARM_MAX: '0' };
    sizeThreadpool(env);
    expect(env.UV_THREADPOOL_SIZE).toBe('20');
    const own: NodeJS.ProcessEnv = { UV_THREADPOOL_SIZE: '6' };
    sizeThreadpool(own);
    expect(own.UV_THREADPOOL_SIZE).toBe('6');
    expect(startedThreadpoolSize(own)).toBe(6);
    expect(startedThreadpoolSize({})).toBe(4);
  });
});
