// How deep a JSON value nests. JSON.parse takes any depth, JSON.stringify recurses: a value
// nested thousands deep overflows the stack when it is written back out. Both the input
// the server takes and the answer a function gives are bounded with this one question.

/** Most levels of nesting a function's input or answer may have. */
export const MAX_JSON_DEPTH = 64;

/** Whether a JSON value nests deeper than `max` levels; iterative, so any depth is safe to ask about. */
export function deeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}
