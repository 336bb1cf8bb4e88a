// A keep-alive HTTP client for load against one server (node:http with an Agent: one TCP
// connection per concurrent request, reused, as a load balancer in front of ZViz would),
// and the tenant a load run acts as. The benchmarks and the soak share it.
import { Agent, request as httpRequest } from 'node:http';
import { performance } from 'node:perf_hooks';
import { GENEROUS_QUOTAS } from './server-process.js';

export interface LoadReply {
  status: number;
  /** Parsed JSON, or the text when it is not JSON. */
  body: any;
  /** Client-side wall time from writing the request to the end of the response. */
  ms: number;
}

export type Auth = 'tenant' | 'admin';

export interface LoadClient {
  request(method: string, path: string, body?: unknown, auth?: Auth): Promise<LoadReply>;
  /** Sets the tenant key requests send (after createTenant). */
  setApiKey(key: string): void;
  /** Closes the keep-alive sockets (they are fds of the server too) and starts a fresh agent. */
  reset(): void;
  close(): void;
}

export function loadClient(url: string, adminToken: string, options: { timeoutMs?: number } = {}): LoadClient {
  let agent = new Agent({ keepAlive: true, maxSockets: 64 });
  let apiKey = '';
  const request = (method: string, path: string, body?: unknown, auth: Auth = 'tenant'): Promise<LoadReply> =>
    new Promise<LoadReply>((res, rej) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers: Record<string, string> = { authorization: `Bearer ${auth === 'admin' ? adminToken : apiKey}` };
      if (payload !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(Buffer.byteLength(payload));
      }
      const t0 = performance.now();
      const req = httpRequest(url + path, { method, agent, headers }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => {
          const ms = performance.now() - t0;
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON (metrics text, an empty body): keep the text
          }
          res({ status: r.statusCode ?? 0, body: parsed, ms });
        });
        r.on('error', rej);
      });
      if (options.timeoutMs !== undefined) {
        const limit = options.timeoutMs;
        req.setTimeout(limit, () => req.destroy(new Error(`no answer to ${method} ${path} within ${limit / 1000} s`)));
      }
      req.on('error', rej);
      req.end(payload);
    });
  return {
    request,
    setApiKey: (key) => (apiKey = key),
    reset: () => {
      agent.destroy();
      agent = new Agent({ keepAlive: true, maxSockets: 64 });
    },
    close: () => agent.destroy(),
  };
}

/** Creates tenant `name` with quotas no load reaches and makes `client` act as it. */
export async function createLoadTenant(client: LoadClient, name: string): Promise<void> {
  const created = await client.request('POST', '/admin/tenants', { name, quotas: GENEROUS_QUOTAS }, 'admin');
  if (created.status !== 201) throw new Error(`Cannot create tenant '${name}': ${created.status} ${JSON.stringify(created.body)}`);
  client.setApiKey((created.body as { apiKey: string }).apiKey);
}
