#!/usr/bin/env node
// The `zviz` command line, as zviz.cts starts it (and the benchmarks do). Everything is
// in cli.ts; this file only connects it to the process.
import { cli } from './cli.js';
import { processIo } from './io.js';

const code = await cli(process.argv.slice(2), processIo());
if (code !== 'serving') {
  // Let what was written reach a pipe before the worker threads and handles are cut short.
  await Promise.all([process.stdout, process.stderr].map((s) => new Promise<void>((resolve) => s.write('', () => resolve()))));
  process.exit(code);
}
