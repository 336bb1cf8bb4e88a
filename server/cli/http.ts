// The client side of the HTTP API for `zviz invoke` and `zviz deploy`: one JSON request,
// with the tenant's key, and the server's answer or a clear reason it could not be had.
// node:http rather than fetch: fetch gives up waiting for headers after 300 s, and an
// invocation may legitimately run up to its profile's timeout (a CI job's log follows it for hours).
import { createReadStream, statSync } from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { API_KEY_PATTERN } from '../tenancy/tenants.js';
import { parseServerUrl } from './args.js';
import { EXIT } from './exit-codes.js';
import { CliError, UsageError } from './io.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

export interface Server {
  url: URL;
  key: string;
}

/** --url (or ZVIZ_URL, or the default) and --key (or ZVIZ_KEY), checked. */
export function serverFrom(values: { url?: string; key?: string }, env: NodeJS.ProcessEnv): Server {
  const url = parseServerUrl('url', values.url ?? (env.ZVIZ_URL || DEFAULT_URL));
  const key = values.key ?? env.ZVIZ_KEY;
  if (key === undefined || key === '') {
    throw new UsageError('Missing API key: pass --key KEY or set ZVIZ_KEY (the server prints a key for tenant dev on its first start)');
  }
  // The key itself is never echoed: it would end up in terminal scrollback and CI logs.
  if (!API_KEY_PATTERN.test(key)) {
    throw new UsageError(`Invalid --key: must look like zviz_<16 hex digits>_<43 characters>: current value has ${key.length} characters`);
  }
  return { url, key };
}

export interface Answer {
  status: number;
  /** Parsed JSON, or the text when the body is not JSON. */
  body: unknown;
  text: string;
}

/**
 * Names the deployed function an invocation runs, for a load balancer that routes by it
 * (deploy/haproxy/haproxy.cfg hashes on it, so a function finds its warm pool).
 */
export const FUNCTION_HEADER = 'x-zviz-function';

export async function callServer(server: Server, method: Method, path: string, body: unknown, extraHeaders: Record<string, string> = {}): Promise<Answer> {
  if (body === undefined) return exchange(server, method, path, extraHeaders, (req) => req.end());
  const payload = Buffer.from(JSON.stringify(body));
  return exchange(server, method, path, { 'content-type': 'application/json', 'content-length': String(payload.length), ...extraHeaders }, (req) => req.end(payload));
}

/** POSTs a file as the body, streamed from disk (an archive to POST /uploads). */
export async function uploadFile(server: Server, path: string, file: string): Promise<Answer> {
  const size = statSync(file).size;
  return exchange(server, 'POST', path, { 'content-type': 'application/octet-stream', 'content-length': String(size) }, (req) =>
    createReadStream(file).on('error', (e) => req.destroy(e)).pipe(req),
  );
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

/**
 * GET whose 200 body is handed over chunk by chunk as it arrives (an event stream, an
 * archive); any other status is read whole and answered, for refusal().
 */
export async function streamFromServer(server: Server, path: string, onChunk: (chunk: Buffer) => void | Promise<void>): Promise<Answer | null> {
  const res = await open(server, 'GET', path, {}, (req) => req.end());
  if (res.statusCode !== 200) return readAnswer(res);
  for await (const c of res) await onChunk(c as Buffer);
  return null;
}

function open(server: Server, method: Method, path: string, headers: Record<string, string>, write: (req: ClientRequest) => void): Promise<IncomingMessage> {
  const target = new URL(path.replace(/^\//, ''), server.url.href.endsWith('/') ? server.url : new URL(`${server.url.href}/`));
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<IncomingMessage>((resolve, reject) => {
    const req = send(target, { method, headers: { ...headers, authorization: `Bearer ${server.key}` } }, resolve);
    req.on('error', reject);
    write(req);
  }).catch((e: NodeJS.ErrnoException) => {
    const hint = e.code === 'ECONNREFUSED' ? " (is 'zviz serve' running there? see --url)" : '';
    throw new CliError(`Cannot reach the server at ${server.url.origin}: ${e.message}${hint}`, EXIT.ZVIZ_FAILED, 'UNREACHABLE');
  });
}

async function exchange(server: Server, method: Method, path: string, headers: Record<string, string>, write: (req: ClientRequest) => void): Promise<Answer> {
  return readAnswer(await open(server, method, path, headers, write));
}

async function readAnswer(res: IncomingMessage): Promise<Answer> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch { // not JSON (an HTML error page of a proxy): the caller shows the text
  }
  return { status: res.statusCode ?? 0, body: parsed, text };
}

/** The API's error shape `{ error: { code, message, details? } }`, when the body is one. */
export function apiError(body: unknown): { code: string; message: string; details?: unknown } | null {
  if (body === null || typeof body !== 'object') return null;
  const e = (body as { error?: unknown }).error;
  if (e === null || typeof e !== 'object') return null;
  const { code, message, details } = e as Record<string, unknown>;
  if (typeof code !== 'string' || typeof message !== 'string') return null;
  return { code, message, ...(details !== undefined ? { details } : {}) };
}

/** A refusal as one line: the server's message and code, and each field the validator named. */
export function refusal(answer: Answer, exitCode: number): CliError {
  const e = apiError(answer.body);
  if (e === null) {
    const snippet = answer.text.length > 200 ? `${answer.text.slice(0, 200)}…` : answer.text;
    return new CliError(`The server answered HTTP ${answer.status}: ${snippet}`, exitCode, 'HTTP');
  }
  // Validation errors list every field in details; the message names only the first.
  const fields = Array.isArray(e.details)
    ? (e.details as Array<{ path?: unknown; message?: unknown }>)
        .filter((d) => typeof d?.path === 'string' && typeof d?.message === 'string' && !e.message.includes(String(d.message)))
        .map((d) => `${String(d.path)} ${String(d.message)}`)
    : [];
  const more = fields.length > 0 ? `(also: ${fields.join('; ')}) ` : '';
  return new CliError(e.message, exitCode, e.code, e.details, `${more}[${e.code}, HTTP ${answer.status}]`.trimStart());
}
