#!/usr/bin/env node
// The `zviz` executable (package.json "bin"; scripts/zviz from a checkout). CommonJS so
// that `zviz serve` can size libuv's thread pool before the ES modules of the command
// line start it (worker-pool/threadpool.cts); every command is then main.ts's.
import { sizeThreadpool } from '../../worker-pool/threadpool.cjs';

if (process.argv[2] === 'serve') sizeThreadpool(process.env);
void import('./main.js');
