// Credentials for requests that suites written before issue 7 send without any: a bare
// fetch(`${s.url}/host`), or node:http requests to /invoke. For a server the harness started
// (and only for those), a request with no Authorization header gets the server's admin
// token on the admin-only routes and its tenant's key on the tenant routes. A request that
// carries its own Authorization header is left alone, and RunningServer.request() goes
// around this entirely (suites that test authentication use it).
import { createRequire, syncBuiltinESMExports } from 'node:module';
import type { ClientRequest, IncomingMessage, RequestOptions } from 'node:http';

interface Credentials {
  adminToken: string;
  apiKey: string | null;
}

/** Origin (`http://127.0.0.1:port`) → credentials of that server. */
const servers = new Map<string, Credentials>();

/** The fetch of the process before the shim: for requests that must go out as written. */
export const rawFetch: typeof fetch = globalThis.fetch.bind(globalThis);

function credentialFor(origin: string, path: string): string | null {
  const c = servers.get(origin);
  if (c === undefined) return null;
  if (path === '/host' || path === '/metrics' || path.startsWith('/admin')) return `Bearer ${c.adminToken}`;
  if ((path === '/invoke' || path === '/audit') && c.apiKey !== null) return `Bearer ${c.apiKey}`;
  return null;
}

let installed = false;

function install(): void {
  if (installed) return;
  installed = true;

  globalThis.fetch = function compatFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    const auth = headers.has('authorization') ? null : credentialFor(url.origin, url.pathname);
    if (auth === null) return rawFetch(input, init);
    headers.set('authorization', auth);
    return rawFetch(input, { ...init, headers });
  } as typeof fetch;

  // node:http: patch the CommonJS module and sync its ESM named exports, so that
  // `import { request } from 'node:http'` in a suite sees the wrapper too.
  const http = createRequire(import.meta.url)('node:http') as { request: (...args: unknown[]) => ClientRequest };
  const original = http.request;
  http.request = function compatRequest(...args: unknown[]): ClientRequest {
    const [first, second] = args;
    if ((typeof first === 'string' || first instanceof URL) && second !== null && typeof second === 'object') {
      const url = new URL(String(first));
      const options = second as RequestOptions;
      const headers = { ...((options.headers as Record<string, string | number> | undefined) ?? {}) };
      const hasAuth = Object.keys(headers).some((k) => k.toLowerCase() === 'authorization');
      const auth = hasAuth ? null : credentialFor(url.origin, url.pathname);
      if (auth !== null) {
        const rest = args.slice(2) as [((res: IncomingMessage) => void)?];
        return original(first, { ...options, headers: { ...headers, authorization: auth } }, ...rest);
      }
    }
    return original(...args);
  };
  syncBuiltinESMExports();
}

export function registerServer(origin: string, credentials: Credentials): void {
  install();
  servers.set(origin, credentials);
}

export function unregisterServer(origin: string): void {
  servers.delete(origin);
}
