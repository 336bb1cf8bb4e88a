// The server's entry point (`node dist/server/start.cjs`): sizes libuv's thread pool for
// the configured sandboxes, then runs server/main.ts. CommonJS on purpose: an ES module
// entry is read through libuv's pool, which starts it at 4 threads before the module's
// first line runs (worker-pool/threadpool.cts).
import { sizeThreadpool } from '../worker-pool/threadpool.cjs';

sizeThreadpool(process.env);
void import('./main.js').then((m) => m.main());
