// Result callbacks of async invocations: which URLs a tenant may name, and the POST.
//
// A callback is a request the server makes on a tenant's behalf, so the URL is an SSRF
// vector: only hosts the operator lists (ZVIZ_CALLBACK_HOSTS) and the loopback names are
// accepted, redirects are never followed (a 3xx would lead anywhere), each attempt has a
// short timeout, and a failing receiver gets a few attempts, never more.
import { ApiError } from '../http/errors.js';

/** Always allowed, whatever the port: the receiver runs on this machine. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

export const CALLBACK_HOST_PATTERN = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))(:\d{1,5})?$/;

/** `a.example, b.example:8443` → ['a.example', 'b.example:8443'] (lower case). */
export function parseCallbackHosts(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
}

/**
 * Whether a callback may go to `url`: a loopback host, or an entry of the allowlist. An
 * entry `host` allows every port of that host; `host:port` that port only.
 */
export function callbackAllowed(url: URL, allowlist: readonly string[]): boolean {
  const host = url.hostname.toLowerCase();
  if (LOOPBACK_HOSTS.has(host)) return true;
  const port = url.port !== '' ? url.port : url.protocol === 'https:' ? '443' : '80';
  return allowlist.includes(host) || allowlist.includes(`${host}:${port}`);
}

/** Throws CALLBACK_NOT_ALLOWED unless `callbackUrl` may be called. */
export function checkCallback(callbackUrl: string, allowlist: readonly string[]): void {
  const url = new URL(callbackUrl);
  if (!callbackAllowed(url, allowlist)) {
    throw new ApiError(
      'CALLBACK_NOT_ALLOWED',
      `Cannot use callbackUrl: host '${url.host}' is not loopback and not in the server's callback allowlist (ZVIZ_CALLBACK_HOSTS)`,
      { host: url.host },
    );
  }
}

export interface DeliveryOptions {
  /** Per attempt. */
  timeoutMs: number;
  /** Pause before each retry; its length is the number of retries. */
  retryDelaysMs: readonly number[];
  /** Asked before each retry: false stops (the server is shutting down). */
  mayRetry?: () => boolean;
  userAgent: string;
}

export interface Delivery {
  delivered: boolean;
  attempts: number;
  /** HTTP status of the last answer; null when none came. */
  status: number | null;
  error: string | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** POSTs `body` as JSON until a 2xx answer or the attempts run out. Never rejects. */
export async function deliver(callbackUrl: string, id: string, body: unknown, opts: DeliveryOptions): Promise<Delivery> {
  const text = JSON.stringify(body);
  let last: Delivery = { delivered: false, attempts: 0, status: null, error: null };
  for (let attempt = 0; attempt <= opts.retryDelaysMs.length; attempt++) {
    if (attempt > 0) {
      if (opts.mayRetry && !opts.mayRetry()) break;
      await sleep(opts.retryDelaysMs[attempt - 1]!);
    }
    try {
      const res = await fetch(callbackUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': opts.userAgent, 'x-zviz-invocation': id },
        body: text,
        redirect: 'manual',
        signal: AbortSignal.timeout(opts.timeoutMs),
      });
      // The answer's body is not ours to read; release the connection.
      await res.body?.cancel().catch(() => undefined); // the receiver closed first: its body is gone anyway
      const ok = res.status >= 200 && res.status < 300;
      last = { delivered: ok, attempts: attempt + 1, status: res.status, error: ok ? null : `answered ${res.status}` };
      if (ok) return last;
      // A client error will not change on retry (except for the usual transient ones).
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) return last;
    } catch (e) {
      const err = e as Error;
      const why = err.name === 'TimeoutError' ? `no answer within ${opts.timeoutMs} ms` : (err.cause as Error | undefined)?.message ?? err.message;
      last = { delivered: false, attempts: attempt + 1, status: null, error: why };
    }
  }
  return last;
}
