// How many threads libuv's pool needs for the server's sandboxes, and the one place that
// sets UV_THREADPOOL_SIZE. Every sandbox is waited on from a thread of that pool (koffi's
// asynchronous calls, worker-pool/sandbox.ts); libuv reads the variable once, when its pool
// first starts, so it must be set before anything uses the pool. An ES module is read
// through the pool (the module loader's asynchronous file reads), which is why this module
// and the entry that calls it (server/start.cts) are CommonJS: requiring them reads the
// files synchronously, and the pool is still unstarted when the variable is set.

/** ZVIZ_MAX_SANDBOXES when unset (server/config.ts). */
export const DEFAULT_MAX_SANDBOXES = 32;
/** ZVIZ_WARM_MAX when unset (server/config.ts). */
export const DEFAULT_WARM_MAX = 16;
/** libuv pool threads kept for the server's own file system work and DNS lookups. */
export const THREADPOOL_MARGIN = 4;
/** libuv's own cap on UV_THREADPOOL_SIZE. */
export const LIBUV_MAX = 1024;

/**
 * Threads for `maxSandboxes` running at once with `warmMax` warm sandboxes or reusable
 * environments: each running sandbox waits on one (its run), and so may its teardown once
 * it has answered; a warm sandbox holds one while it is made or released; and a few stay
 * for the server's own file system work and DNS lookups.
 */
export function threadpoolSize(maxSandboxes: number, warmMax: number): number {
  return Math.min(LIBUV_MAX, threadpoolNeed(maxSandboxes, warmMax));
}

/** The threads those need, beyond libuv's cap or not (the configuration refuses more than the cap). */
export function threadpoolNeed(maxSandboxes: number, warmMax: number): number {
  return 2 * maxSandboxes + warmMax + THREADPOOL_MARGIN;
}

/** An integer setting as the configuration reads it; the default where it is not one (the configuration refuses it later). */
function setting(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value !== undefined && value.trim() !== '' && Number.isInteger(n) && n >= 0 ? n : fallback;
}

/** threadpoolSize for the ZVIZ_* environment. */
export function threadpoolSizeFor(env: NodeJS.ProcessEnv): number {
  return threadpoolSize(setting(env.ZVIZ_MAX_SANDBOXES, DEFAULT_MAX_SANDBOXES), setting(env.ZVIZ_WARM_MAX, DEFAULT_WARM_MAX));
}

/** Sets UV_THREADPOOL_SIZE for the configuration, unless the operator set it. Call before anything starts the pool. */
export function sizeThreadpool(env: NodeJS.ProcessEnv): void {
  if (env.UV_THREADPOOL_SIZE === undefined || env.UV_THREADPOOL_SIZE === '') env.UV_THREADPOOL_SIZE = String(threadpoolSizeFor(env));
}

/**
 * The pool libuv started with: UV_THREADPOOL_SIZE as it was when the pool started (nothing
 * changes it later), 4 when unset, clamped to libuv's range.
 */
export function startedThreadpoolSize(env: NodeJS.ProcessEnv): number {
  const n = Number(env.UV_THREADPOOL_SIZE);
  return Number.isInteger(n) && n > 0 ? Math.min(n, LIBUV_MAX) : 4;
}
