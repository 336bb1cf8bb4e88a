import { describe, expect, it } from 'vitest';
import { connectionFor, connectionOptions, redactUrl } from './redis.js';

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

  it('names a Sentinel-monitored master: the Sentinels, the master name, credentials and db', () => {
    expect(connectionFor('redis+sentinel://:pw@s1,s2:26380,[::1]:26381/zviz/2?sentinelPassword=sp')).toEqual({
      kind: 'sentinel',
      options: {
        sentinels: [
          { host: 's1', port: 26379 },
          { host: 's2', port: 26380 },
          { host: '::1', port: 26381 },
        ],
        name: 'zviz',
        password: 'pw',
        db: 2,
        sentinelPassword: 'sp',
      },
    });
    expect(() => connectionFor('redis+sentinel://s1:26379')).toThrow(/must name the master/);
  });

  it('names a Redis Cluster by its seed nodes', () => {
    expect(connectionFor('redis+cluster://u:p@n1:7000,n2')).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 6379 },
      ],
      options: { redisOptions: { username: 'u', password: 'p' } },
    });
    expect(() => connectionFor('redis+cluster://n1:notaport')).toThrow(/is not host\[:port\]/);
  });

  it('hides the password when the URL is logged', () => {
    expect(redactUrl('redis+sentinel://:pw@s1:26379,s2/zviz')).toBe('redis+sentinel://:***@s1:26379,s2/zviz');
    expect(redactUrl('redis+cluster://u:pw@n1,n2')).toBe('redis+cluster://u:***@n1,n2');
    expect(redactUrl('redis://zviz:secret@10.0.0.5:6380/3')).toBe('redis://zviz:***@10.0.0.5:6380/3');
    expect(redactUrl('/run/redis.sock')).toBe('/run/redis.sock');
  });
});
