// Holds on things that must not be removed while something uses them (an image a sandbox
// runs from, a bundle tree, an upload a job is starting from): counted per key, each
// released by the function `take` returns, once however often it is called.

export class Holds<K> {
  readonly #count = new Map<K, number>();

  /** Holds `key` until the returned function is called (idempotent). */
  take(key: K): () => void {
    this.#count.set(key, (this.#count.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.#count.get(key) ?? 1) - 1;
      if (n > 0) this.#count.set(key, n);
      else this.#count.delete(key);
    };
  }

  /** Whether anything holds `key`. */
  has(key: K): boolean {
    return this.#count.has(key);
  }
}
