// Soak: N invocations of a mix — hello in node, python and bash (inline, and deployed when
// the server has PUT /functions), an egress hello, and the ones that hit a limit: OOM,
// timeout, fork bomb, output flood — with bounded concurrency against a real server, while
// sampling what the server holds on the host (soak-metrics.ts). It prints the samples, the
// slope of each metric per 1000 invocations and a verdict; it fails when something grows.
//
//   node dist/load-tests/soak.js [--quick] [-n 10000] [--concurrency 4] [--every 50]
//
// --quick is the CI size (300 invocations). Needs root, like the server. The server runs
// like the test harness starts it (test/support/server-process.ts): the built dist/server/start.cjs on an ephemeral loopback
// port, its own state directory (and private Redis), and here also its own router network
// namespace for the egress sandboxes and ZVIZ_WARM_IDLE_MS short enough for its warm pools
// to drain once the load stops.
import { execFileSync } from 'node:child_process';
import { isEntryPoint } from '../worker-pool/util/entry-point.js';
import { errorMessage } from '../worker-pool/util/errors.js';
import { createLoadTenant, loadClient, type LoadReply } from '../test/support/http-client.js';
import { makeProfilesDir } from '../test/support/profiles.js';
import { startServerProcess, type ServerProcess } from '../test/support/server-process.js';
import { trySh } from '../test/support/shell.js';
import { END_TOLERANCE, fdDiff, fdKinds, judge, METRICS, sampler, table, type HostSample, type Sample, type Verdict } from './soak-metrics.js';


export interface SoakOptions {
  invocations: number;
  concurrency: number;
  /** Sample every this many finished invocations. */
  every: number;
  /** Where progress and the report go. Default: stdout. */
  print?: (line: string) => void;
}

export const FULL: SoakOptions = { invocations: 10_000, concurrency: 4, every: 50 };
export const QUICK: SoakOptions = { invocations: 300, concurrency: 4, every: 10 };

type Reply = Pick<LoadReply, 'status' | 'body'>;

/** One kind of invocation in the mix: its request, and what its answer must show. */
interface Kind {
  name: string;
  weight: number;
  path: string;
  body: Record<string, unknown>;
  expect: (r: Reply) => string | null;
}

const okStdout = (want: string) => (r: Reply) =>
  r.status === 200 && r.body.status === 'ok' && r.body.stdout === want ? null : describe(r);
const status = (...statuses: string[]) => (r: Reply) => (r.status === 200 && statuses.includes(r.body.status) ? null : describe(r));

function describe(r: Reply): string {
  if (r.status !== 200) return `HTTP ${r.status} ${JSON.stringify(r.body?.error ?? r.body).slice(0, 200)}`;
  return `status ${r.body.status} reason ${r.body.reason} stdout ${JSON.stringify(String(r.body.stdout).slice(0, 60))}`;
}

const INLINE: Kind[] = [
  { name: 'hello-node', weight: 3, path: '/invoke', body: { runtime: 'node', code: "console.log('hello')" }, expect: okStdout('hello\n') },
  { name: 'hello-python', weight: 3, path: '/invoke', body: { runtime: 'python', code: "print('hello')" }, expect: okStdout('hello\n') },
  { name: 'hello-bash', weight: 3, path: '/invoke', body: { runtime: 'bash', code: 'echo hello' }, expect: okStdout('hello\n') },
  {
    name: 'hello-egress',
    weight: 1,
    path: '/invoke',
    body: { runtime: 'bash', code: 'echo hello', profile: 'egress-closed' },
    expect: okStdout('hello\n'),
  },
  {
    name: 'oom',
    weight: 1,
    path: '/invoke',
    body: { runtime: 'python', code: 'b = bytearray(256 * 1024 * 1024)\nprint(len(b))', limits: { memoryMb: 64 } },
    expect: status('oom'),
  },
  { name: 'timeout', weight: 1, path: '/invoke', body: { runtime: 'bash', code: 'sleep 5', limits: { timeoutMs: 200 } }, expect: status('timeout') },
  {
    name: 'fork-bomb',
    weight: 1,
    path: '/invoke',
    // Ends as the pids limit, the timeout or the shell giving up decides: any of them is fine.
    body: { runtime: 'bash', code: 'b() { b | b & }; b; sleep 1', limits: { pids: 16, timeoutMs: 1000 } },
    expect: status('error', 'killed', 'timeout', 'ok'),
  },
  {
    name: 'output-flood',
    weight: 1,
    path: '/invoke',
    body: { runtime: 'bash', code: 'yes', limits: { outputBytes: 1000 } },
    expect: (r) => (r.status === 200 && r.body.status === 'killed' && r.body.reason === 'output-limit' ? null : describe(r)),
  },
];

const DEPLOYED: Array<{ name: string; deploy: Record<string, unknown> }> = [
  {
    name: 'soak-hello-node',
    deploy: { runtime: 'node', code: "module.exports = async (event) => ({ message: `hello, ${event.name}` });\n" },
  },
  {
    name: 'soak-hello-python',
    deploy: { runtime: 'python', code: "def handler(event, context):\n    return {'message': 'hello, ' + event['name']}\n" },
  },
];

function deployedKind(name: string): Kind {
  return {
    name,
    weight: 2,
    path: '/invoke',
    body: { function: name, input: { name: 'soak' } },
    expect: (r) => (r.status === 200 && r.body.status === 'ok' && r.body.output?.message === 'hello, soak' ? null : describe(r)),
  };
}

interface SoakServer {
  pid: number;
  routerNetns: string;
  request: (method: string, path: string, body?: unknown, auth?: 'tenant' | 'admin') => Promise<Reply>;
  logs: () => string;
  /** Closes the client's keep-alive sockets (they are fds of the server too). */
  idleClient: () => void;
  stop: () => Promise<number | null>;
}

async function startSoakServer(): Promise<SoakServer> {
  // The shipped profiles plus `egress-closed`: egress mode with nothing allowed (a veth, nft rules, no reachable peer).
  const profiles = makeProfilesDir({
    'egress-closed': (p) => {
      p.description = 'soak: egress mode with an empty allowlist';
      p.network = { mode: 'egress', allow: [] };
    },
  });
  const routerNetns = `zvsoak-${process.pid}`;
  execFileSync('ip', ['netns', 'add', routerNetns]);
  const cleanUp = (): void => {
    profiles.remove();
    trySh('ip', ['netns', 'del', routerNetns]);
  };
  let proc: ServerProcess;
  try {
    proc = await startServerProcess({
      boundedLogs: true,
      startTimeoutMs: 30_000,
      env: {
        ZVIZ_PROFILES_DIR: profiles.dir,
        ZVIZ_NET_ROUTER_NETNS: routerNetns,
        ZVIZ_NET_POOL: '10.199.128.0/24',
        // Pools drain 2 s after the load stops, so the end state is comparable to the start.
        ZVIZ_WARM_IDLE_MS: '2000',
      },
    });
  } catch (e) {
    cleanUp();
    throw e;
  }
  const client = loadClient(proc.url, proc.adminToken, { timeoutMs: 60_000 });
  try {
    await createLoadTenant(client, 'soak');
  } catch (e) {
    client.close();
    await proc.stop('SIGKILL');
    cleanUp();
    throw e;
  }
  return {
    pid: proc.pid,
    routerNetns,
    request: client.request,
    logs: proc.logs,
    idleClient: client.reset,
    stop: async () => {
      client.close();
      const code = await proc.stop('SIGTERM', 60_000);
      cleanUp();
      return code;
    },
  };
}

/** Deploys the hello functions if the server has deployed functions; their kinds, or none. */
async function deployHellos(s: SoakServer): Promise<Kind[]> {
  const kinds: Kind[] = [];
  for (const fn of DEPLOYED) {
    const r = await s.request('PUT', `/functions/${fn.name}`, fn.deploy);
    if (r.status === 404 && r.body?.error?.code === 'NOT_FOUND') return []; // no such route on this server
    if (r.status !== 200 && r.status !== 201) throw new Error(`Cannot deploy ${fn.name}: ${r.status} ${JSON.stringify(r.body)}`);
    kinds.push(deployedKind(fn.name));
  }
  return kinds;
}

/** A fixed, interleaved order of the mix (weights respected), so runs are comparable. */
function schedule(kinds: readonly Kind[], n: number): Kind[] {
  const wheel = kinds.flatMap((k) => Array.from({ length: k.weight }, () => k));
  // Stride through the wheel by a step coprime with its length: kinds interleave.
  let step = 7;
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  while (gcd(step, wheel.length) !== 1) step++;
  return Array.from({ length: n }, (_, i) => wheel[(i * step) % wheel.length]!);
}

export interface SoakReport {
  ok: boolean;
  invocations: number;
  seconds: number;
  kinds: Record<string, { n: number; wrong: number }>;
  /** First answers that were not what their kind expects (at most 20). */
  wrong: string[];
  samples: Sample[];
  baseline: HostSample;
  end: HostSample;
  verdicts: Verdict[];
  serverExit: number | null;
}

/**
 * Samples until every count is back within its tolerance of `baseline` or `timeoutMs`
 * passed. Warm pools drain ZVIZ_WARM_IDLE_MS after the last claim; piscina ends idle worker
 * threads (and their fds) after 60 s.
 */
async function settle(sample: () => Promise<HostSample>, baseline: HostSample, timeoutMs: number): Promise<HostSample> {
  const until = Date.now() + timeoutMs;
  let s = await sample();
  while (METRICS.some((m) => s[m] > baseline[m] + END_TOLERANCE[m]) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 500));
    s = await sample();
  }
  return s;
}

/** The main thread's V8 heap in use, MiB, from GET /metrics (prom-client's default metrics). */
async function heapMiB(s: SoakServer): Promise<number> {
  const r = await s.request('GET', '/metrics', undefined, 'admin');
  const m = typeof r.body === 'string' ? /^nodejs_heap_size_used_bytes (\d+(?:\.\d+)?(?:e\+\d+)?)/m.exec(r.body) : null;
  return m ? Math.round((Number(m[1]) / 1024 / 1024) * 10) / 10 : NaN;
}

export async function soak(opts: SoakOptions): Promise<SoakReport> {
  const print = opts.print ?? ((line: string) => process.stdout.write(line + '\n'));
  const s = await startSoakServer();
  try {
    const host = sampler({ serverPid: s.pid, routerNetns: s.routerNetns });
    const sample = async (): Promise<HostSample> => ({ ...host(), heapMiB: await heapMiB(s) });
    const kinds = [...INLINE, ...(await deployHellos(s))];
    // Baseline: the idle server after start-up (and the deploys), client sockets closed.
    s.idleClient();
    const baseline = await settle(sample, await sample(), 0);
    const baselineFds = fdKinds(s.pid);
    const order = schedule(kinds, opts.invocations);
    const tally: SoakReport['kinds'] = Object.fromEntries(kinds.map((k) => [k.name, { n: 0, wrong: 0 }]));
    const wrong: string[] = [];
    const samples: Sample[] = [{ done: 0, ...baseline }];
    const started = Date.now();
    let next = 0;
    let done = 0;
    print(`soak: ${opts.invocations} invocations of ${kinds.map((k) => k.name).join(', ')}; concurrency ${opts.concurrency}; server pid ${s.pid}`);

    const worker = async (): Promise<void> => {
      while (next < order.length) {
        const kind = order[next++]!;
        let problem: string | null;
        try {
          problem = kind.expect(await s.request('POST', kind.path, kind.body));
        } catch (e) {
          problem = errorMessage(e);
        }
        tally[kind.name]!.n++;
        if (problem !== null) {
          tally[kind.name]!.wrong++;
          if (wrong.length < 20) wrong.push(`${kind.name}: ${problem}`);
        }
        const at = ++done;
        if (at % opts.every === 0) {
          // Other workers go on while this one samples: the sample belongs to `at`.
          const taken: Sample = { done: at, ...(await sample()) };
          samples.push(taken);
          if (at % (opts.every * 10) === 0) {
            print(`  ${at}/${opts.invocations}  ${((Date.now() - started) / 1000).toFixed(0)} s  rss ${taken.rssMiB} MiB  heap ${taken.heapMiB} MiB  fds ${taken.fds}  supervisors ${taken.supervisors}`);
          }
        }
      }
    };
    await Promise.all(Array.from({ length: opts.concurrency }, () => worker()));
    const seconds = (Date.now() - started) / 1000;

    // End state: the load stopped, the warm pools drained (idle 2 s), client sockets closed.
    s.idleClient();
    print(`load done in ${seconds.toFixed(0)} s; waiting for the server to idle (warm pools, worker threads)`);
    const end = await settle(sample, baseline, 120_000);
    const endFds = fdKinds(s.pid);
    // The server first grows to a working size (V8 heap, worker threads, warm pools): slopes are judged after.
    const warmup = Math.max(100, Math.floor(opts.invocations / 5));
    samples.sort((a, b) => a.done - b.done);
    const verdicts = judge(samples, baseline, end, warmup);
    const serverExit = await s.stop();
    const allRight = Object.values(tally).every((t) => t.wrong === 0);
    const ok = allRight && verdicts.every((v) => !v.grows) && serverExit === 0;

    print('');
    print(table(samples));
    print('');
    print(`${opts.invocations} invocations in ${seconds.toFixed(0)} s (${(opts.invocations / seconds).toFixed(1)}/s)`);
    for (const [name, t] of Object.entries(tally)) print(`  ${name.padEnd(20)} ${String(t.n).padStart(6)}  ${t.wrong === 0 ? 'all as expected' : `${t.wrong} not as expected`}`);
    for (const w of wrong) print(`  ! ${w}`);
    print('');
    print('metric        baseline      end   slope/1000 (± s.e.)   verdict');
    for (const v of verdicts) {
      const sl = `${v.slope.perThousand.toFixed(2)} (± ${Number.isFinite(v.slope.stdErr) ? v.slope.stdErr.toFixed(2) : '—'})`;
      const verdict = v.grows ? `GROWS: ${v.why}` : v.note !== null ? `steady (${v.note})` : 'steady';
      print(`${v.metric.padEnd(12)} ${String(v.baseline).padStart(9)} ${String(v.end).padStart(8)}   ${sl.padEnd(22)}${verdict}`);
    }
    print(`open fds that changed from the baseline to the end: ${fdDiff(baselineFds, endFds)}`);
    print(`server exit code ${serverExit}`);
    print(ok ? 'soak: PASS' : 'soak: FAIL');
    return { ok, invocations: opts.invocations, seconds, kinds: tally, wrong, samples, baseline, end, verdicts, serverExit };
  } catch (e) {
    print(`soak: server log tail:\n${s.logs().slice(-4000)}`);
    await s.stop();
    throw e;
  }
}

function parseArgs(argv: string[]): SoakOptions {
  const opts: SoakOptions = argv.includes('--quick') ? { ...QUICK } : { ...FULL };
  const value = (flag: string): number | undefined => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = Number(argv[i + 1]);
    if (!Number.isInteger(v) || v < 1) throw new Error(`${flag} needs a positive integer: current value is ${argv[i + 1]}`);
    return v;
  };
  opts.invocations = value('-n') ?? opts.invocations;
  opts.concurrency = value('--concurrency') ?? opts.concurrency;
  opts.every = value('--every') ?? opts.every;
  return opts;
}

if (isEntryPoint(import.meta.url)) {
  try {
    const report = await soak(parseArgs(process.argv.slice(2)));
    process.exitCode = report.ok ? 0 : 1;
  } catch (e) {
    process.stderr.write(`soak: ${errorMessage(e)}\n`);
    process.exitCode = 2;
  }
}
