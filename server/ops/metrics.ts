// Prometheus metrics (prom-client), one registry per app so tests can build several. Served
// at GET /metrics behind the admin token, and without it on ZVIZ_METRICS_PORT (loopback).
import { Hono } from 'hono';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface MetricsOptions {
  /** Process and Node.js metrics (process_*, nodejs_*); off in unit tests. */
  defaultMetrics?: boolean;
  /** Invocations waiting for a worker thread, read at scrape time. */
  poolQueued?: () => number;
  /** Whether the state store answers, read at scrape time. */
  stateUp?: () => boolean;
  /** Warm sandbox pools (size now, target, cumulative hits and misses), read at scrape time. */
  warmPools?: () => ReadonlyArray<WarmPoolStats>;
}

export interface WarmPoolStats {
  key: string;
  size: number;
  target: number;
  hits: number;
  misses: number;
}

const SECONDS_FAST = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const SECONDS_RUN = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900];

export class Metrics {
  readonly registry = new Registry();
  readonly invocations: Counter<'tenant' | 'runtime' | 'status'>;
  readonly queueWait: Histogram<'runtime'>;
  readonly setup: Histogram<'runtime'>;
  readonly run: Histogram<'runtime'>;
  readonly inFlight: Gauge;
  readonly quotaRefusals: Counter<'tenant' | 'quota'>;
  readonly securityEvents: Counter<'tenant' | 'kind'>;
  readonly authFailures: Counter<'reason'>;
  readonly stateErrors: Counter<'operation'>;
  readonly imageStore: Gauge<'kind'>;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    this.invocations = new Counter({
      name: 'zviz_invocations_total',
      help: "Invocations that reached the sandbox pool, by tenant, runtime and status ('failed': no result)",
      labelNames: ['tenant', 'runtime', 'status'],
      registers,
    });
    this.queueWait = new Histogram({
      name: 'zviz_queue_wait_seconds',
      help: 'Wall time of an invocation outside sandbox setup and run: waiting for a worker thread, hand-off, teardown',
      labelNames: ['runtime'],
      buckets: SECONDS_FAST,
      registers,
    });
    this.setup = new Histogram({
      name: 'zviz_sandbox_setup_seconds',
      help: 'Time to build a sandbox (namespaces, mounts, cgroup) before the function runs',
      labelNames: ['runtime'],
      buckets: SECONDS_FAST,
      registers,
    });
    this.run = new Histogram({
      name: 'zviz_run_seconds',
      help: 'Time from the release of the function to the end of its sandbox',
      labelNames: ['runtime'],
      buckets: SECONDS_RUN,
      registers,
    });
    this.inFlight = new Gauge({
      name: 'zviz_sandboxes_in_flight',
      help: 'Invocations admitted on this host and not finished (running or waiting for a thread)',
      registers,
    });
    this.quotaRefusals = new Counter({
      name: 'zviz_quota_refusals_total',
      help: 'Invocations refused by a tenant quota, by quota (concurrency, rate, cpu, limits)',
      labelNames: ['tenant', 'quota'],
      registers,
    });
    this.securityEvents = new Counter({
      name: 'zviz_security_events_total',
      help: 'Security decisions taken in sandboxes (seccomp, broker, network, limit), by kind',
      labelNames: ['tenant', 'kind'],
      registers,
    });
    this.authFailures = new Counter({
      name: 'zviz_auth_failures_total',
      help: 'Requests refused for missing or invalid credentials, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.stateErrors = new Counter({
      name: 'zviz_state_errors_total',
      help: 'Requests failed closed because the state store (Redis) did not answer, by operation',
      labelNames: ['operation'],
      registers,
    });
    this.imageStore = new Gauge({
      name: 'zviz_image_store_bytes',
      help: "The image store after its last collection: 'stored' (every image), 'pinned' (what deployed functions and the catalog pin: never collected), 'budget' (ZVIZ_IMAGE_CACHE_MB)",
      labelNames: ['kind'],
      registers,
    });
    const { poolQueued, stateUp } = opts;
    if (poolQueued) {
      new Gauge({
        name: 'zviz_pool_queued',
        help: 'Invocations waiting for one of ZVIZ_MAX_SANDBOXES',
        registers,
        collect() {
          this.set(poolQueued());
        },
      });
    }
    if (stateUp) {
      new Gauge({
        name: 'zviz_state_up',
        help: '1 when the state store (Redis) is connected, else 0',
        registers,
        collect() {
          this.set(stateUp() ? 1 : 0);
        },
      });
    }
    const { warmPools } = opts;
    if (warmPools) {
      // One series per warm pool, read at scrape time. Sizes are gauges; hits and misses are
      // cumulative counts kept by the pool itself: counters, set at scrape time.
      const perPool = (Metric: typeof Gauge | typeof Counter, name: string, help: string, pick: (p: WarmPoolStats) => number) =>
        new Metric({
          name,
          help,
          labelNames: ['pool'],
          registers,
          collect(this: Gauge<'pool'> | Counter<'pool'>) {
            this.reset();
            for (const p of warmPools()) {
              if (this instanceof Gauge) this.set({ pool: p.key }, pick(p));
              else this.inc({ pool: p.key }, pick(p));
            }
          },
        });
      perPool(Gauge, 'zviz_warm_pool_size', 'Pre-warmed sandboxes ready, per warm pool', (p) => p.size);
      perPool(Gauge, 'zviz_warm_pool_target', 'Pre-warmed sandboxes each warm pool aims to keep', (p) => p.target);
      perPool(Counter, 'zviz_warm_pool_hits_total', 'Invocations that got a pre-warmed sandbox, per warm pool', (p) => p.hits);
      perPool(Counter, 'zviz_warm_pool_misses_total', 'Invocations that had to build a sandbox, per warm pool', (p) => p.misses);
    }
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** The app of the ZVIZ_METRICS_PORT listener: GET /metrics and nothing else, no token. */
export function createMetricsApp(metrics: Metrics): Hono {
  const app = new Hono();
  app.get('/metrics', async function metricsText(c) {
    return c.body(await metrics.text(), 200, { 'Content-Type': metrics.contentType });
  });
  return app;
}
