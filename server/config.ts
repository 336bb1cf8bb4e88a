// Server configuration, from the environment, validated by one zod schema. A bad value
// stops start-up with a message naming the variable and the value.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { z } from 'zod';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = existsSync(join(here, '..', 'package.json')) ? resolve(here, '..') : resolve(here, '..', '..');

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const configSchema = z.object({
  ZVIZ_HOST: z.string().min(1).default('127.0.0.1'),
  ZVIZ_PORT: int(0, 65535).default(8080),
  ZVIZ_STATE_DIR: z.string().regex(/^\//, 'must be an absolute path').default('/var/lib/zviz'),
  ZVIZ_PROFILES_DIR: z.string().min(1).default(join(repoRoot, 'profiles')),
  ZVIZ_MAX_SANDBOXES: int(1, 1024).default(32),
  ZVIZ_MAX_QUEUE: int(0, 100_000).default(256),
  ZVIZ_UID_BASE: int(65536, 4_000_000_000).default(1_000_000_000),
  ZVIZ_DRAIN_MS: int(0, 600_000).default(15_000),
  ZVIZ_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
});

export interface Config {
  host: string;
  port: number;
  stateDir: string;
  profilesDir: string;
  maxSandboxes: number;
  maxQueue: number;
  uidBase: number;
  drainMs: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty variables count as unset, as in a shell's ${VAR:-default}.
  const present = Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith('ZVIZ_') && v !== ''));
  const parsed = configSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? '');
      return `Invalid configuration: ${key} ${i.message}: current value is ${JSON.stringify(present[key])}`;
    });
    throw new ConfigError(lines.join('\n'));
  }
  const c = parsed.data;
  return {
    host: c.ZVIZ_HOST,
    port: c.ZVIZ_PORT,
    stateDir: c.ZVIZ_STATE_DIR,
    profilesDir: resolve(c.ZVIZ_PROFILES_DIR),
    maxSandboxes: c.ZVIZ_MAX_SANDBOXES,
    maxQueue: c.ZVIZ_MAX_QUEUE,
    uidBase: c.ZVIZ_UID_BASE,
    drainMs: c.ZVIZ_DRAIN_MS,
    logLevel: c.ZVIZ_LOG_LEVEL,
  };
}
