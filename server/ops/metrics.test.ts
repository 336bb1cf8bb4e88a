import { describe, expect, it } from 'vitest';
import { createMetricsApp, Metrics } from './metrics.js';

describe('Metrics', () => {
  it('reads pool, state and warm-pool figures at scrape time', async () => {
    let warm = [{ key: 'default/bash', size: 2, target: 3, hits: 5, misses: 1 }];
    const m = new Metrics({ poolQueued: () => 7, stateUp: () => false, warmPools: () => warm });
    let text = await m.text();
    expect(text).toContain('zviz_pool_queued 7');
    expect(text).toContain('zviz_state_up 0');
    expect(text).toContain('zviz_warm_pool_size{pool="default/bash"} 2');
    expect(text).toContain('zviz_warm_pool_target{pool="default/bash"} 3');
    expect(text).toContain('zviz_warm_pool_hits_total{pool="default/bash"} 5');
    expect(text).toContain('# TYPE zviz_warm_pool_misses_total counter');
    warm = [{ key: 'minimal/node', size: 0, target: 1, hits: 0, misses: 2 }];
    text = await m.text();
    expect(text).not.toContain('default/bash');
    expect(text).toContain('zviz_warm_pool_misses_total{pool="minimal/node"} 2');
  });

  it('the metrics listener app serves GET /metrics and nothing else', async () => {
    const app = createMetricsApp(new Metrics());
    const res = await app.request('/metrics');
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('# TYPE zviz_invocations_total counter');
    expect((await app.request('/invoke', { method: 'POST' })).status).toBe(404);
  });
});
