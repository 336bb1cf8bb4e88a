import { describe, expect, it } from 'vitest';
import { connectionOptions, redactUrl } from './redis.js';

describe('ZVIZ_REDIS_URL forms', () => {
  it.each([
    ['/var/lib/zviz/redis/redis.sock', { path: '/var/lib/zviz/redis/redis.sock' }],
    ['unix:///run/redis/redis.sock?db=2', { path: '/run/redis/redis.sock', db: 2 }],
    ['redis://127.0.0.1', { host: '127.0.0.1', port: 6379 }],
    ['redis://zviz:s%40cret@10.0.0.5:6380/3', { host: '10.0.0.5', port: 6380, username: 'zviz', password: 's@cret', db: 3 }],
    ['rediss://[::1]:6390', { host: '::1', port: 6390, tls: {} }],
  ])('%s connects to %j', (url, expected) => {
    expect(connectionOptions(url)).toEqual(expected);
  });

  it('hides the password when the URL is logged', () => {
    expect(redactUrl('redis://zviz:secret@10.0.0.5:6380/3')).toBe('redis://zviz:***@10.0.0.5:6380/3');
    expect(redactUrl('/run/redis.sock')).toBe('/run/redis.sock');
  });
});
