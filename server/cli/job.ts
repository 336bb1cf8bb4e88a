// `zviz job`: CI jobs on a running server. `run` uploads a workspace (a directory, packed
// into a .tar.gz, or an archive as it is), starts the job, follows its log as it comes and
// exits with the job's ending (exit-codes.ts), optionally downloading its artifacts; ^C
// cancels the job. `status`, `log [--follow]`, `cancel` and `artifacts` act on a job by id.
import { createWriteStream, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import * as tar from 'tar';
import { RUNTIMES } from '../../profiles/schema.js';
import { ENV_KEY_PATTERN, PROFILE_NAME_PATTERN } from '../invocation/schemas.js';
import { DIGEST_PATTERN } from '../uploads/store.js';
import { helpText, parseCommandLine, parseEnvAssignment, parseInteger, shown, type OptionSpecs } from './args.js';
import { EXIT, exitCodeFor, statusLines } from './exit-codes.js';
import { callServer, refusal, serverFrom, streamFromServer, uploadFile, type Server } from './http.js';
import { CliError, Progress, say, UsageError, writeJson, type Io } from './io.js';
import { REMOTE_OPTIONS } from './invoke.js';
import { LIMIT_OPTIONS, limitsObject, parseLimitFlags } from './limits.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

const RUN_OPTIONS = {
  ...REMOTE_OPTIONS,
  workspace: { type: 'string', short: 'w', value: 'DIR|ARCHIVE', help: 'the workspace: a directory (packed as .tar.gz) or a .tar, .tar.gz or .zip' },
  script: { type: 'string', short: 's', value: 'FILE', help: "the job's shell script ('-': read it from stdin); else the command after '--'" },
  image: { type: 'string', short: 'i', value: 'REF', help: "an image of the server's store as the job's root (default: the host's /usr)" },
  runtime: { type: 'string', short: 'r', value: 'RUNTIME', help: `with no image, the runtime the profile must allow: ${RUNTIMES.join(', ')} (default bash)` },
  profile: { type: 'string', short: 'p', value: 'NAME', help: 'profile (default ci)' },
  env: { type: 'string', short: 'e', multiple: true, value: 'KEY=VALUE', help: 'an environment variable (repeatable)' },
  secret: { type: 'string', multiple: true, value: 'PATH=NAME', help: 'a provisioned secret, readable at PATH in the job (repeatable)' },
  artifact: { type: 'string', short: 'a', multiple: true, value: 'GLOB', help: 'workspace files to collect after the run (repeatable): build/**, *.tar.gz' },
  'cache-key': { type: 'string', value: 'KEY', help: "your tenant's cache to restore before and save after a successful run" },
  'cache-path': { type: 'string', multiple: true, value: 'PATH', help: 'what the cache holds, relative to the workspace (repeatable)' },
  'cache-seed': {
    type: 'string',
    value: 'DIR|ARCHIVE|DIGEST',
    help: 'restored while the tenant has no saved cache for the key: a directory laid out as the workspace (packed as .tar.gz), an archive, or an upload digest',
  },
  disk: { type: 'string', value: 'MIB', help: "the workspace's size in MiB (default: the profile's)" },
  'log-mb': { type: 'string', value: 'MIB', help: "the most the job may print, MiB (default: the profile's); past it it is killed" },
  ...LIMIT_OPTIONS,
  'artifacts-out': { type: 'string', short: 'o', value: 'FILE', help: "download the artifacts' .tar.gz to FILE after the run" },
  detach: { type: 'boolean', short: 'd', help: "print the job's id and exit; do not follow it" },
  json: { type: 'boolean', help: "print the job's record as JSON on stdout (the log goes to stderr)" },
} as const satisfies OptionSpecs;

const ID_OPTIONS = {
  ...REMOTE_OPTIONS,
  follow: { type: 'boolean', short: 'f', help: 'log: keep following until the job ends' },
  out: { type: 'string', short: 'o', value: 'FILE', help: 'artifacts: where to write the .tar.gz (default <id>-artifacts.tar.gz)' },
  json: { type: 'boolean', help: "print the server's answer as JSON on stdout" },
} as const satisfies OptionSpecs;

export const JOB_HELP = helpText(
  'zviz job run [options] (--script FILE | -- COMMAND [ARGS…])\n       zviz job status|log|cancel|artifacts [options] ID',
  `CI jobs on a running server (POST /jobs). 'run' uploads the workspace, starts the job,
prints its log as it comes and exits with the job's status; ^C cancels it. 'status' prints
a job's record, 'log' its output (--follow: until it ends), 'cancel' kills it,
'artifacts' downloads its artifacts archive.`,
  { ...RUN_OPTIONS, ...ID_OPTIONS },
  `exit status (run): the job's; 124 timeout, 128+N killed by signal N, 137 out of memory
or cancelled, 125 the server refused or could not run it, 2 bad usage.`,
);

const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface JobRecordView {
  id: string;
  status: string;
  reason: string | null;
  exitCode: number | null;
  signal: string | null;
  limits?: Record<string, number>;
  artifacts?: { digest: string; files: number; bytes: number; skipped: Array<{ path: string; reason: string }> } | null;
  error?: { code: string; message: string };
}

export async function jobCommand(args: readonly string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    (sub === undefined ? io.stderr : io.stdout).write(JOB_HELP);
    return sub === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (sub === 'run') return run(rest, io);
  if (!['status', 'log', 'cancel', 'artifacts'].includes(sub)) throw new UsageError(`Unknown job command ${shown(sub)}: expected run, status, log, cancel or artifacts`);
  const parsed = parseCommandLine(`job ${sub}`, rest, ID_OPTIONS);
  if (parsed.help) {
    io.stdout.write(JOB_HELP);
    return EXIT.OK;
  }
  const [id, ...extra] = parsed.positionals;
  if (id === undefined || extra.length > 0 || !JOB_ID.test(id)) throw new UsageError(`Missing or invalid job id: expected one id as POST /jobs answered it${id ? `: current value is ${shown(id)}` : ''}`);
  const server = serverFrom(parsed.values, io.env);
  const json = parsed.values.json === true;
  switch (sub) {
    case 'status': {
      const a = await callServer(server, 'GET', `/jobs/${id}`, undefined);
      if (a.status !== 200 && a.status !== 202) throw refusal(a, EXIT.FAILURE);
      if (json) writeJson(io.stdout, a.body);
      else io.stdout.write(summary(a.body as JobRecordView));
      return EXIT.OK;
    }
    case 'log':
      await printLog(server, id, parsed.values.follow === true, io.stdout);
      return EXIT.OK;
    case 'cancel': {
      const a = await callServer(server, 'DELETE', `/jobs/${id}`, undefined);
      if (a.status !== 200 && a.status !== 202) throw refusal(a, EXIT.FAILURE);
      if (json) writeJson(io.stdout, a.body);
      else io.stdout.write(summary(a.body as JobRecordView));
      return EXIT.OK;
    }
    default: {
      const file = parsed.values.out ?? `${id}-artifacts.tar.gz`;
      await download(server, id, file);
      if (json) writeJson(io.stdout, { id, file: resolve(file), bytes: statSync(file).size });
      else say(io.stderr, `wrote ${file}`);
      return EXIT.OK;
    }
  }
}

function summary(r: JobRecordView): string {
  const parts = [`${r.id} ${r.status}`];
  if (r.reason) parts.push(`reason ${r.reason}`);
  if (r.exitCode !== null && r.exitCode !== undefined) parts.push(`exit ${r.exitCode}`);
  if (r.artifacts?.digest) parts.push(`artifacts ${r.artifacts.files} files ${r.artifacts.bytes} bytes`);
  if (r.error) parts.push(`error ${r.error.code}: ${r.error.message}`);
  return `${parts.join(', ')}\n`;
}

/** The job's log: as it is, or (--follow) as an event stream until the end; answers the end's record. */
async function printLog(server: Server, id: string, follow: boolean, out: { write(s: string | Uint8Array): void }): Promise<unknown> {
  let end: unknown = null;
  let buffered = '';
  const decoder = new StringDecoder('utf8');
  const refused = await streamFromServer(server, `/jobs/${id}/log${follow ? '?follow=1' : ''}`, (chunk) => {
    if (!follow) {
      out.write(chunk);
      return;
    }
    buffered += decoder.write(chunk);
    let at: number;
    while ((at = buffered.indexOf('\n\n')) >= 0) {
      const block = buffered.slice(0, at);
      buffered = buffered.slice(at + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      if (event === 'log') out.write(JSON.parse(data) as string);
      else if (event === 'end') end = JSON.parse(data);
    }
  });
  if (refused !== null) throw refusal(refused, EXIT.ZVIZ_FAILED);
  return end;
}

async function download(server: Server, id: string, file: string): Promise<void> {
  const stream = createWriteStream(file, { mode: 0o644 });
  const refused = await streamFromServer(server, `/jobs/${id}/artifacts`, async (chunk) => {
    if (!stream.write(chunk)) await once(stream, 'drain');
  });
  stream.end();
  await once(stream, 'close');
  if (refused !== null) {
    rmSync(file, { force: true });
    throw refusal(refused, EXIT.FAILURE);
  }
}

async function run(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandLine('job run', args, RUN_OPTIONS);
  if (parsed.help) {
    io.stdout.write(JOB_HELP);
    return EXIT.OK;
  }
  const v = parsed.values;
  if (parsed.positionals.length > 0) throw new UsageError(`Unexpected argument ${shown(parsed.positionals[0]!)}: put the command after '--'`);
  const command = parsed.rest ?? [];
  if ((v.script === undefined) === (command.length === 0)) throw new UsageError("Missing what to run: pass --script FILE, or a command after '--' (not both)");
  const body: Record<string, unknown> = {};
  if (v.script !== undefined) {
    const text = v.script === '-' ? (await io.stdin.readAll(1 << 20)).toString('utf8') : await import('node:fs').then((fs) => {
      try {
        return fs.readFileSync(v.script!, 'utf8');
      } catch (e) {
        throw new UsageError(`Invalid --script: cannot read ${shown(v.script!)}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`);
      }
    });
    body.script = text;
  } else body.command = command;
  if (v.image !== undefined) body.image = v.image;
  if (v.runtime !== undefined) {
    if (!(RUNTIMES as readonly string[]).includes(v.runtime)) throw new UsageError(`Invalid --runtime: must be one of ${RUNTIMES.join(', ')}: current value is ${shown(v.runtime)}`);
    body.runtime = v.runtime;
  }
  if (v.profile !== undefined) {
    if (!PROFILE_NAME_PATTERN.test(v.profile)) throw new UsageError(`Invalid --profile: must be a profile name: current value is ${shown(v.profile)}`);
    body.profile = v.profile;
  }
  if (v.env) body.env = Object.fromEntries(v.env.map((e) => parseEnvAssignment('env', e, ENV_KEY_PATTERN)));
  if (v.secret) {
    body.secrets = Object.fromEntries(
      v.secret.map((s) => {
        const at = s.indexOf('=');
        if (at <= 0) throw new UsageError(`Invalid --secret: expected PATH=NAME: current value is ${shown(s)}`);
        return [s.slice(0, at), s.slice(at + 1)];
      }),
    );
  }
  if (v.artifact) body.artifacts = v.artifact;
  if ((v['cache-key'] === undefined) !== (v['cache-path'] === undefined)) throw new UsageError('Invalid cache: --cache-key and --cache-path go together');
  if (v['cache-seed'] !== undefined && v['cache-key'] === undefined) throw new UsageError('Invalid cache: --cache-seed needs --cache-key and --cache-path');
  const cache = v['cache-key'] === undefined ? undefined : { key: v['cache-key'], paths: v['cache-path'] };
  const limits: Record<string, number> = { ...limitsObject(parseLimitFlags(v)) };
  if (v.disk !== undefined) limits.diskMb = parseInteger('disk', v.disk, 16);
  if (v['log-mb'] !== undefined) limits.logMb = parseInteger('log-mb', v['log-mb'], 1);
  if (Object.keys(limits).length > 0) body.limits = limits;

  const server = serverFrom(v, io.env);
  const progress = new Progress(io.stderr);
  if (v.workspace !== undefined) body.workspace = await uploadTree(server, 'workspace', v.workspace, progress);
  if (cache !== undefined) {
    const seed = v['cache-seed'];
    body.cache = seed === undefined ? cache : { ...cache, seed: DIGEST_PATTERN.test(seed) ? seed : await uploadTree(server, 'cache-seed', seed, progress) };
  }
  progress.show(`starting job at ${server.url.origin}…`);
  const started = await callServer(server, 'POST', '/jobs', body).finally(() => progress.clear());
  if (started.status !== 202) throw refusal(started, EXIT.ZVIZ_FAILED);
  const id = (started.body as { id: string }).id;
  if (v.detach === true) {
    io.stdout.write(`${id}\n`);
    return EXIT.OK;
  }
  say(io.stderr, `job ${id}`);
  // ^C cancels the job on the server; the log then ends with its record.
  const onInterrupt = () => void callServer(server, 'DELETE', `/jobs/${id}`, undefined).catch(() => undefined); // the job still ends by its timeout
  process.once('SIGINT', onInterrupt);
  let record: JobRecordView | null;
  try {
    record = (await printLog(server, id, true, v.json === true ? io.stderr : io.stdout)) as JobRecordView | null;
  } finally {
    process.removeListener('SIGINT', onInterrupt);
  }
  if (record === null || record.status === 'running') {
    const a = await callServer(server, 'GET', `/jobs/${id}`, undefined);
    record = a.status === 200 ? (a.body as JobRecordView) : null;
  }
  if (record === null) throw new CliError(`Cannot read the record of job ${id}: see 'zviz job status ${id}'`, EXIT.ZVIZ_FAILED, 'HTTP');
  if (v['artifacts-out'] !== undefined && record.artifacts?.digest) await download(server, id, v['artifacts-out']);
  if (v.json === true) writeJson(io.stdout, record);
  else {
    const lines = record.status === 'failed' ? [`the job could not run: ${record.error?.message ?? record.reason ?? 'unknown'}`] : [];
    if (record.reason === 'cancelled') lines.push('the job was cancelled');
    else if (record.reason === 'disk-full') lines.push(`the workspace is full (${record.limits?.diskMb ?? '?'} MiB): raise --disk`);
    else if (record.reason === 'output-limit') lines.push(`killed: the job's log passed ${record.limits?.logMb ?? '?'} MiB: raise --log-mb`);
    else if (record.status !== 'failed' && record.limits) lines.push(...statusLines(record as never, record.limits as never));
    for (const s of record.artifacts?.skipped ?? []) lines.push(`artifact ${s.path} not collected: ${s.reason}`);
    if (lines.length > 0) say(io.stderr, lines.join('\n'));
  }
  if (record.status === 'failed') return EXIT.ZVIZ_FAILED;
  return exitCodeFor(record as never);
}

/**
 * `--<option>`'s directory packed into a .tar.gz (links stored as links: the server refuses
 * those pointing out), or an archive as it is, uploaded: its digest.
 */
async function uploadTree(server: Server, option: 'workspace' | 'cache-seed', path: string, progress: Progress): Promise<string> {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new UsageError(`Invalid --${option}: cannot read ${shown(path)}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`);
  }
  const tmp = st.isDirectory() ? mkdtempSync(join(tmpdir(), `zviz-${option}-`)) : null;
  try {
    let file = path;
    if (tmp !== null) {
      file = join(tmp, `${option}.tar.gz`);
      const entries = readdirSync(path).sort();
      if (entries.length === 0) throw new UsageError(`Invalid --${option}: ${shown(path)} is empty`);
      progress.show(`packing ${path}…`);
      await tar.c({ gzip: true, cwd: resolve(path), file, portable: true, follow: false }, entries);
    }
    progress.show(`uploading the ${option === 'workspace' ? 'workspace' : 'cache seed'} (${statSync(file).size} bytes)…`);
    const up = await uploadFile(server, '/uploads', file).finally(() => progress.clear());
    if (up.status !== 200 && up.status !== 201) throw refusal(up, EXIT.ZVIZ_FAILED);
    return (up.body as { digest: string }).digest;
  } finally {
    if (tmp !== null) rmSync(tmp, { recursive: true, force: true });
  }
}
