// What every TypeScript layer needs of a caught value: JavaScript lets anything be thrown,
// so a catch clause holds `unknown`. These read it without a cast that lies when a string,
// a number or undefined was thrown.

/** The message of an Error, or the thrown value as text. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** An Error for any thrown value (a handler that only sees Error instances would miss a thrown string). */
export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(`Non-error thrown: ${String(e)}`);
}
