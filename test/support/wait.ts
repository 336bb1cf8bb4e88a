// Waiting in tests: a pause, and polling something until it holds. Every suite and the
// load tests use these; none keeps its own copy.

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
