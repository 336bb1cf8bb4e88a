// Result callbacks of async invocations: which URLs a tenant may name, and the POST.
//
// A callback is a request the server makes on a tenant's behalf, so the URL is an SSRF
// vector. Only hosts the operator lists (ZVIZ_CALLBACK_HOSTS) are accepted; loopback is
// no exception. Every host is compared in one canonical form, so the aliases of an address
// (127.1, 2130706433, 0x7f000001, ::ffff:127.0.0.1, localhost) cannot slip past the list.
// A listed name is resolved once, here; each address it gives must be a public one or
// itself listed, and the connection is pinned to the address that was checked and checked
// again once connected (DNS rebinding). Redirects are never followed, each attempt has a
// short timeout, and a failing receiver gets a few attempts, never more.
//
// Tenants see a coarse outcome only (`delivered 204`, `failed`, `refused by policy`): the
// reason a delivery failed (connection refused, reset, a status) would make the callback a
// port scanner. The operator's log keeps the detail.
import { lookup as dnsLookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP, type LookupFunction, type Socket } from 'node:net';
import { ApiError } from '../http/errors.js';

export const CALLBACK_HOST_PATTERN = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))(:\d{1,5})?$/;

/** `a.example, b.example:8443` → ['a.example', 'b.example:8443'] (lower case). */
export function parseCallbackHosts(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
}

/** A host in one form: an IPv4 dotted quad (also for IPv4-mapped IPv6), compressed IPv6 without brackets, or a lower-case name without a trailing dot. */
export interface CanonicalHost {
  host: string;
  ip: 0 | 4 | 6;
}

const MAPPED_V4 = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/**
 * Canonical form of a host as a URL or an operator writes it. The WHATWG URL parser already
 * reads every IPv4 spelling (127.1, 2130706433, 0x7f000001, 017700000001) as a dotted quad
 * and compresses IPv6; an IPv4-mapped IPv6 address connects to its IPv4 one, so it is that.
 * Null when it is no host at all.
 */
export function canonicalHost(raw: string): CanonicalHost | null {
  const bracketed = isIP(raw) === 6 ? `[${raw}]` : raw;
  let hostname: string;
  try {
    hostname = new URL(`http://${bracketed}/`).hostname;
  } catch {
    return null; // not a host: an invalid IPv4 (999.1) or stray characters
  }
  if (hostname.startsWith('[')) {
    const v6 = hostname.slice(1, -1);
    const m = MAPPED_V4.exec(v6);
    if (m) {
      const hi = parseInt(m[1]!, 16);
      const lo = parseInt(m[2]!, 16);
      return { host: `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`, ip: 4 };
    }
    return { host: v6, ip: 6 };
  }
  if (isIP(hostname) === 4) return { host: hostname, ip: 4 };
  const name = hostname.replace(/\.$/, '');
  return name === '' ? null : { host: name, ip: 0 };
}

interface Entry {
  host: CanonicalHost;
  /** Null: every port. */
  port: number | null;
}

/** `host`, `host:port`, `[v6]`, `[v6]:port`, in canonical form; null when not one. */
function parseEntry(s: string): Entry | null {
  const m = /^(\[[^\]]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(s);
  if (!m) return null;
  const host = canonicalHost(m[1]!);
  const port = m[2] === undefined ? null : Number(m[2]);
  if (host === null || (port !== null && port > 65535)) return null;
  return { host, port };
}

/** Whether an entry of ZVIZ_CALLBACK_HOSTS names a host (and port) at all. */
export function validCallbackHost(s: string): boolean {
  return CALLBACK_HOST_PATTERN.test(s) && parseEntry(s) !== null;
}

/**
 * Addresses that are not on the public internet: loopback, "this network" (0.0.0.0
 * connects to loopback), private, shared, link-local, documentation, benchmarking,
 * multicast and reserved ranges, IPv6 unique-local, link-local, IPv4-embedding prefixes
 * (NAT64, 6to4, Teredo) and everything outside 2000::/3. Reachable only when listed.
 */
const SPECIAL = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) SPECIAL.addSubnet(net, bits, 'ipv4');
const GLOBAL_V6 = new BlockList();
GLOBAL_V6.addSubnet('2000::', 3, 'ipv6');
for (const [net, bits] of [['2001::', 23], ['2001:db8::', 32], ['2002::', 16]] as const) SPECIAL.addSubnet(net, bits, 'ipv6');

export function isSpecialAddress(a: CanonicalHost): boolean {
  if (a.ip === 4) return SPECIAL.check(a.host, 'ipv4');
  return !GLOBAL_V6.check(a.host, 'ipv6') || SPECIAL.check(a.host, 'ipv6');
}

function effectivePort(url: URL): number {
  return url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
}

function listed(entries: readonly Entry[], host: CanonicalHost, port: number): boolean {
  return entries.some((e) => e.host.host === host.host && (e.port === null || e.port === port));
}

/** `localhost` is loopback by definition (RFC 6761): its addresses, without asking DNS. */
const LOCALHOST_ADDRESSES: CanonicalHost[] = [
  { host: '127.0.0.1', ip: 4 },
  { host: '::1', ip: 6 },
];

/**
 * Whether a callback may go to `url`, judged without DNS: its host (canonical) is listed,
 * or it is `localhost` and a loopback address is. A listed name is judged again by the
 * addresses it resolves to when the callback is sent.
 */
export function callbackAllowed(url: URL, allowlist: readonly string[]): boolean {
  const host = canonicalHost(url.hostname);
  if (host === null) return false;
  const entries = allowlist.map(parseEntry).filter((e): e is Entry => e !== null);
  const port = effectivePort(url);
  if (listed(entries, host, port)) return true;
  return host.ip === 0 && host.host === 'localhost' && LOCALHOST_ADDRESSES.some((a) => listed(entries, a, port));
}

/** Throws CALLBACK_NOT_ALLOWED unless `callbackUrl` may be called. */
export function checkCallback(callbackUrl: string, allowlist: readonly string[]): void {
  const url = new URL(callbackUrl);
  if (!callbackAllowed(url, allowlist)) {
    throw new ApiError(
      'CALLBACK_NOT_ALLOWED',
      `Cannot use callbackUrl: host '${url.host}' is not in the server's callback allowlist (ZVIZ_CALLBACK_HOSTS)`,
      { host: url.host },
    );
  }
}

export type Resolver = (name: string) => Promise<Array<{ address: string; family: number }>>;

const systemResolver: Resolver = (name) => dnsLookup(name, { all: true, verbatim: true });

/**
 * The one address a callback to `url` connects to, or why none may be used. The name is
 * resolved once; every address it gives must pass (a name that resolves to anything
 * unlisted and not public is refused whole, whatever else it gives).
 */
export async function resolveCallback(
  url: URL,
  allowlist: readonly string[],
  resolve: Resolver = systemResolver,
): Promise<{ ok: true; address: CanonicalHost } | { ok: false; policy: boolean; why: string }> {
  const host = canonicalHost(url.hostname);
  if (host === null || !callbackAllowed(url, allowlist)) return { ok: false, policy: true, why: `host '${url.hostname}' is not listed` };
  if (host.ip !== 0) return { ok: true, address: host };
  const entries = allowlist.map(parseEntry).filter((e): e is Entry => e !== null);
  const port = effectivePort(url);
  let addresses: CanonicalHost[];
  if (host.host === 'localhost') addresses = LOCALHOST_ADDRESSES.filter((a) => listed(entries, a, port));
  else {
    try {
      addresses = (await resolve(host.host)).map((a) => canonicalHost(a.address)).filter((a): a is CanonicalHost => a !== null && a.ip !== 0);
    } catch (e) {
      return { ok: false, policy: false, why: `cannot resolve '${host.host}': ${(e as Error).message}` };
    }
    if (addresses.length === 0) return { ok: false, policy: false, why: `'${host.host}' has no address` };
    const named = listed(entries, host, port);
    // A listed name may lead to public addresses; anything else must be listed itself.
    const refused = addresses.find((a) => !listed(entries, a, port) && !(named && !isSpecialAddress(a)));
    if (refused) return { ok: false, policy: true, why: `'${host.host}' resolves to ${refused.host}, which is not public and not listed` };
  }
  return { ok: true, address: addresses[0]! };
}

export interface DeliveryOptions {
  /** Hosts callbacks may go to (ZVIZ_CALLBACK_HOSTS), checked again at delivery. */
  allowlist: readonly string[];
  /** Per attempt. */
  timeoutMs: number;
  /** Pause before each retry; its length is the number of retries. */
  retryDelaysMs: readonly number[];
  /** Asked before each retry: false stops (the server is shutting down). */
  mayRetry?: () => boolean;
  userAgent: string;
  /** How names are resolved; the system's resolver unless a test names its own. */
  resolve?: Resolver;
}

/** What a tenant is told of a delivery. */
export type CallbackOutcome = `delivered ${number}` | 'failed' | 'refused by policy';

export interface Delivery {
  delivered: boolean;
  outcome: CallbackOutcome;
  attempts: number;
  /** HTTP status of the last answer; null when none came. For the operator's log only. */
  status: number | null;
  /** Why it failed. For the operator's log only. */
  error: string | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class PolicyRefusal extends Error {}

/** One POST pinned to `address`: resolves with the status, rejects with why not. */
function post(url: URL, address: CanonicalHost, text: string, id: string, opts: DeliveryOptions): Promise<number> {
  const family = address.ip === 6 ? 6 : 4;
  // The connection goes to the checked address and no other: whatever a resolver says now.
  const lookup: LookupFunction = (_name, options, cb) => {
    if (options.all) (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: address.host, family }]);
    else cb(null, address.host, family);
  };
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<number>((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent: false,
        lookup,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(text),
          'user-agent': opts.userAgent,
          'x-zviz-invocation': id,
        },
        signal: AbortSignal.timeout(opts.timeoutMs),
      },
      (res: IncomingMessage) => {
        // The answer's body is not ours to read; release the connection.
        res.resume();
        res.on('error', () => undefined); // the receiver closed first: its body is gone anyway
        resolve(res.statusCode ?? 0);
        req.destroy();
      },
    );
    req.on('socket', (socket: Socket) => {
      socket.once('connect', () => {
        // Belt and braces against rebinding: the peer is the address that was checked.
        const peer = socket.remoteAddress === undefined ? null : canonicalHost(socket.remoteAddress);
        if (peer?.host !== address.host) req.destroy(new PolicyRefusal(`connected to ${socket.remoteAddress ?? 'nothing'}, not ${address.host}`));
      });
    });
    req.on('error', reject);
    req.end(text);
  });
}

/** POSTs `body` as JSON until a 2xx answer or the attempts run out. Never rejects. */
export async function deliver(callbackUrl: string, id: string, body: unknown, opts: DeliveryOptions): Promise<Delivery> {
  let text: string;
  let url: URL;
  try {
    text = JSON.stringify(body);
    url = new URL(callbackUrl);
  } catch (e) {
    return { delivered: false, outcome: 'failed', attempts: 0, status: null, error: `cannot send the result: ${(e as Error).message}` };
  }
  let target: Awaited<ReturnType<typeof resolveCallback>>;
  try {
    target = await resolveCallback(url, opts.allowlist, opts.resolve);
  } catch (e) {
    target = { ok: false, policy: false, why: (e as Error).message };
  }
  if (!target.ok) {
    return { delivered: false, outcome: target.policy ? 'refused by policy' : 'failed', attempts: 0, status: null, error: target.why };
  }
  let last: Delivery = { delivered: false, outcome: 'failed', attempts: 0, status: null, error: null };
  for (let attempt = 0; attempt <= opts.retryDelaysMs.length; attempt++) {
    if (attempt > 0) {
      if (opts.mayRetry && !opts.mayRetry()) break;
      await sleep(opts.retryDelaysMs[attempt - 1]!);
    }
    try {
      const status = await post(url, target.address, text, id, opts);
      const ok = status >= 200 && status < 300;
      last = { delivered: ok, outcome: ok ? `delivered ${status}` : 'failed', attempts: attempt + 1, status, error: ok ? null : `answered ${status}` };
      if (ok) return last;
      // A client error will not change on retry (except for the usual transient ones).
      if (status >= 400 && status < 500 && status !== 408 && status !== 429) return last;
    } catch (e) {
      const err = e as Error;
      if (err instanceof PolicyRefusal) return { delivered: false, outcome: 'refused by policy', attempts: attempt + 1, status: null, error: err.message };
      const why = err.name === 'TimeoutError' || err.name === 'AbortError' ? `no answer within ${opts.timeoutMs} ms` : err.message;
      last = { delivered: false, outcome: 'failed', attempts: attempt + 1, status: null, error: why };
    }
  }
  return last;
}
