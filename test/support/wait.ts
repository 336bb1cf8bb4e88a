// Waiting in tests: a pause, and polling something until it holds. Every suite and the
// load tests use these; none keeps its own copy.

/**
 * ZVIZ_TEST_TIME_SCALE (default 1): how much slower than a plain machine this one is (the
 * VM job under TCG sets it). Fixed waits that only bound how long something may take — a
 * server's start-up, a test's timeout — are multiplied by it, so slowness never reads as
 * failure. Never applied to a limit a test checks ZViz enforces.
 */
export function timeScale(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.ZVIZ_TEST_TIME_SCALE ?? '1');
  return Number.isFinite(v) && v >= 1 ? v : 1;
}

/**
 * `ms` times timeScale(), at most `capMs` (a profile's max.timeoutMs, which a request may
 * not exceed): for a function's time limit that only bounds how long it may take.
 */
export function scaledMs(ms: number, capMs = Infinity): number {
  return Math.min(capMs, Math.round(ms * timeScale()));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

/** Polls `get` (sync or async) until `done` holds of its value or `timeoutMs` passes; returns the last value either way. */
export async function pollUntil<T>(get: () => T | Promise<T>, done: (v: T) => boolean, timeoutMs: number, everyMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  let v = await get();
  while (!done(v) && Date.now() < end) {
    await sleep(everyMs);
    v = await get();
  }
  return v;
}

/** The first value of `get` that is not null or undefined, or null once `timeoutMs` passed. */
export async function pollFor<T>(get: () => T | null | undefined | Promise<T | null | undefined>, timeoutMs: number, everyMs = 10): Promise<T | null> {
  const v = await pollUntil(get, (x) => x !== null && x !== undefined, timeoutMs, everyMs);
  return v ?? null;
}

/** Like pollFor, but a timeout is an error naming `what` was awaited. */
export async function waitFor<T>(
  get: () => T | null | undefined | Promise<T | null | undefined>,
  what: string,
  timeoutMs = 10_000,
  everyMs = 50,
): Promise<T> {
  const v = await pollFor(get, timeoutMs, everyMs);
  if (v === null) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
  return v;
}

/** A random lower-case token, safe in shell words, file names, namespace names and env values. */
export function token(length = 10): string {
  let out = '';
  while (out.length < length) out += Math.random().toString(36).slice(2);
  return out.slice(0, length);
}
