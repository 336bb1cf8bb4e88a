// First start on a developer's machine: with no tenant at all and the server bound to
// loopback, create tenant `dev` and hand its key to whoever started the server. On any
// other binding the key would end up in a log that others may read, so nothing is created.
import { isIP } from 'node:net';
import { quotasSchema, TenantExistsError, type TenantStore } from './tenants.js';

export const DEV_TENANT = 'dev';

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '[::1]';
}

/** The new key of `dev`, or null when tenants exist, another host won the race, or not on loopback. */
export async function createDevTenant(tenants: TenantStore, host: string): Promise<string | null> {
  if (!isLoopback(host) || (await tenants.count()) > 0) return null;
  try {
    return (await tenants.create(DEV_TENANT, quotasSchema.parse({}))).apiKey;
  } catch (e) {
    if (e instanceof TenantExistsError) return null;
    throw e;
  }
}

/** A command that runs a first function with the key, ready to paste. */
export function tryCommand(url: string, apiKey: string): string {
  const body = JSON.stringify({ runtime: 'bash', code: 'echo hello from zviz' });
  return `curl -s ${url}/invoke -H 'Authorization: Bearer ${apiKey}' -H 'Content-Type: application/json' -d '${body}'`;
}
