// A running job's log: stdout and stderr interleaved as they arrive, of which the last
// `maxBytes` are kept (a job that logs for hours holds a bounded amount of the server's
// memory), with followers that get each chunk as it comes. When the job ends the kept
// tail is written beside the job's other files and served from there.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export type LogListener = (chunk: Buffer | null) => void;

export class JobLog {
  #chunks: Buffer[] = [];
  #kept = 0;
  #total = 0;
  #ended = false;
  readonly #listeners = new Set<LogListener>();

  constructor(readonly maxBytes: number) {}

  append(data: Buffer): void {
    if (this.#ended || data.length === 0) return;
    this.#total += data.length;
    const piece = data.length > this.maxBytes ? data.subarray(data.length - this.maxBytes) : Buffer.from(data);
    this.#chunks.push(piece);
    this.#kept += piece.length;
    while (this.#kept > this.maxBytes) {
      const first = this.#chunks[0]!;
      const over = this.#kept - this.maxBytes;
      if (first.length <= over) {
        this.#chunks.shift();
        this.#kept -= first.length;
      } else {
        this.#chunks[0] = first.subarray(over);
        this.#kept -= over;
      }
    }
    for (const l of this.#listeners) l(data);
  }

  /** The kept tail. */
  tail(): Buffer {
    return Buffer.concat(this.#chunks, this.#kept);
  }

  get totalBytes(): number {
    return this.#total;
  }

  get keptBytes(): number {
    return this.#kept;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Calls `l` with every later chunk, then with null at the end. Returns the unsubscribe. */
  follow(l: LogListener): () => void {
    if (this.#ended) {
      l(null);
      return () => undefined;
    }
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  /** No more output: followers get their end. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const l of this.#listeners) l(null);
    this.#listeners.clear();
  }

  /** Writes the kept tail to `file` (temporary name, then rename). */
  async save(file: string): Promise<void> {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, this.tail(), { mode: 0o600 });
    await rename(tmp, file);
  }
}
