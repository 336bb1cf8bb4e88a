import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

describe('loadConfig: state, auth and metrics variables', () => {
  it('defaults to a private Redis, no admin token and no metrics listener', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ redisUrl: null, redisServer: 'redis-server', adminToken: null, metricsPort: null, auditKeep: 10_000, leaseSlackMs: 30_000 });
  });

  it('reads them when set', () => {
    const c = loadConfig({
      ZVIZ_REDIS_URL: 'redis://127.0.0.1:6379/1',
      ZVIZ_ADMIN_TOKEN: 'a'.repeat(32),
      ZVIZ_METRICS_PORT: '9464',
      ZVIZ_AUDIT_KEEP: '500',
      ZVIZ_LEASE_SLACK_MS: '2000',
    });
    expect(c).toMatchObject({ redisUrl: 'redis://127.0.0.1:6379/1', adminToken: 'a'.repeat(32), metricsPort: 9464, auditKeep: 500, leaseSlackMs: 2000 });
  });

  it.each([
    ['ZVIZ_ADMIN_TOKEN', 'short-secret'],
    ['ZVIZ_REDIS_URL', 'http://user:hunter2@example'],
  ])('an invalid %s is refused without echoing its value', (name, value) => {
    let err: unknown;
    try {
      loadConfig({ [name]: value });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(name);
    expect((err as Error).message).toContain(`hidden (${value.length} characters)`);
    expect((err as Error).message).not.toContain(value);
  });
});

describe('loadConfig: ZVIZ_CALLBACK_HOSTS', () => {
  it('is empty by default: no callback host, loopback included, until the operator lists one', () => {
    expect(loadConfig({}).callbackHosts).toEqual([]);
  });

  it('takes names, addresses in any spelling and ports', () => {
    expect(loadConfig({ ZVIZ_CALLBACK_HOSTS: 'Hooks.example, 127.1:8080, [::1], 2130706433' }).callbackHosts).toEqual(['hooks.example', '127.1:8080', '[::1]', '2130706433']);
  });

  it.each(['a b', '999.1', 'hooks.example:99999', 'http://hooks.example'])('refuses %j naming the variable', (value) => {
    expect(() => loadConfig({ ZVIZ_CALLBACK_HOSTS: value })).toThrowError(/ZVIZ_CALLBACK_HOSTS/);
  });
});

describe('loadConfig: CI jobs', () => {
  it('defaults: 4 jobs at once, 1 MiB of log kept, no job egress', () => {
    expect(loadConfig({}).jobs).toEqual({ maxJobs: 4, logBytes: 1024 * 1024, cacheBytes: 2048 * 1024 * 1024, cacheTtlS: 604_800, maxArtifacts: 1000, egress: null });
  });

  it('reads ZVIZ_JOB_EGRESS as an egress allowlist, with ZVIZ_JOB_DNS', () => {
    const c = loadConfig({ ZVIZ_JOB_EGRESS: '10.20.0.0/16:443+80, udp:10.0.0.53/32:53, 192.0.2.7/32', ZVIZ_JOB_DNS: '10.0.0.53' });
    expect(c.jobs.egress).toEqual({
      allow: [
        { cidr: '10.20.0.0/16', ports: [443, 80], protocol: 'tcp' },
        { cidr: '10.0.0.53/32', ports: [53], protocol: 'udp' },
        { cidr: '192.0.2.7/32', ports: [], protocol: 'tcp' },
      ],
      dns: '10.0.0.53',
    });
  });

  it.each(['registry.example:443', '10.0.0.0/33', '10.0.0.0/8:0', '10.0.0.0/8:http', ','])('refuses ZVIZ_JOB_EGRESS=%j naming the variable', (value) => {
    expect(() => loadConfig({ ZVIZ_JOB_EGRESS: value })).toThrowError(/ZVIZ_JOB_EGRESS/);
  });
});

describe('loadConfig: sandboxes and libuv thread pool', () => {
  it("refuses more sandboxes than libuv's pool can wait on, naming both variables", () => {
    expect(loadConfig({ ZVIZ_MAX_SANDBOXES: '500', ZVIZ_WARM_MAX: '16' }).maxSandboxes).toBe(500); // 1020 threads
    expect(() => loadConfig({ ZVIZ_MAX_SANDBOXES: '505', ZVIZ_WARM_MAX: '16' })).toThrowError(
      new ConfigError(
        "Invalid configuration: ZVIZ_MAX_SANDBOXES (505) and ZVIZ_WARM_MAX (16) need 1030 threads of libuv's pool (2 × ZVIZ_MAX_SANDBOXES + ZVIZ_WARM_MAX + 4), which has at most 1024: lower either",
      ),
    );
  });
});
