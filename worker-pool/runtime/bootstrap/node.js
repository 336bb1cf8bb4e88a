// ZViz bootstrap for node, run inside a pre-warmed sandbox before its invocation arrives.
//   node bootstrap.js handler <module> : load the handler, say ready, run it on the event
//   node bootstrap.js inline <path>         : say ready, then run the code sent as a module
//                                             (work: { code, args, env })
// The work arrives on fd 3 (closed by the supervisor after writing); the answer goes to
// fd 4, after a one-byte "R" that tells the supervisor the runtime has loaded. Closing fd 4
// says the answer is complete: the supervisor answers then, while this process exits.
'use strict';
const fs = require('node:fs');
const Module = require('node:module');

const CTL = 3;
const REPLY = 4;

function readAll(fd) {
  const chunks = [];
  const buf = Buffer.allocUnsafe(1 << 16);
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) return Buffer.concat(chunks);
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
}

function errorOf(e) {
  if (e instanceof Error) return { message: `${e.name}: ${e.message}`, stack: e.stack ?? null };
  return { message: `Thrown value: ${String(e)}`, stack: null };
}

function answer(obj) {
  let text;
  try {
    text = JSON.stringify(obj);
  } catch (e) {
    text = JSON.stringify({ ok: false, error: errorOf(new TypeError(`Result is not JSON-serializable: ${e.message}`)) });
  }
  fs.writeSync(REPLY, text === undefined ? 'null' : text);
  // Whatever the handler printed went out before (stdout and stderr are synchronous on
  // pipes), so the answer is complete here.
  fs.closeSync(REPLY);
}

async function handlerMode(entry) {
  let fn;
  try {
    const mod = entry.endsWith('.mjs') ? await import(entry) : require(entry);
    fn = typeof mod === 'function' ? mod : typeof mod.default === 'function' ? mod.default : mod.handler;
    if (typeof fn !== 'function') throw new TypeError(`${entry} exports no handler function (default or handler)`);
  } catch (e) {
    fs.writeSync(REPLY, 'R');
    answer({ ok: false, error: errorOf(e) });
    process.exit(1);
  }
  fs.writeSync(REPLY, 'R');
  const msg = JSON.parse(readAll(CTL).toString('utf8'));
  try {
    const output = await fn(msg.event, msg.context);
    answer({ ok: true, output: output === undefined ? null : output });
    process.exit(0);
  } catch (e) {
    answer({ ok: false, error: errorOf(e) });
    process.exit(1);
  }
}

function inlineMode(entry) {
  fs.writeSync(REPLY, 'R');
  const { code, args, env } = JSON.parse(readAll(CTL).toString('utf8'));
  fs.closeSync(CTL);
  fs.closeSync(REPLY);
  Object.assign(process.env, env);
  process.argv = [process.argv[0], entry, ...args];
  const m = new Module(entry, null);
  m.filename = entry;
  m.paths = Module._nodeModulePaths('/fn');
  process.mainModule = m;
  require.main = m;
  m._compile(code, entry);
}

const [mode, entry] = process.argv.slice(2);
if (mode === 'handler') void handlerMode(entry);
else inlineMode(entry);
