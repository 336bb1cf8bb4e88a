// ZViz bootstrap for node, run inside a pre-warmed sandbox before its invocation arrives.
//   node bootstrap.js handler <module> : load the handler, say ready, run it on the event
//   node bootstrap.js inline <path>         : say ready, then run the code sent as a module
//                                             (work: { code, args, env })
//   node bootstrap.js serve <module>        : a reusable environment: load the handler, say
//                                             ready, then serve invocations one at a time,
//                                             each framed as a u32 little-endian length and
//                                             that many bytes, in on fd 3 and out on fd 4
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

function answerText(obj) {
  let text;
  try {
    text = JSON.stringify(obj);
  } catch (e) {
    text = JSON.stringify({ ok: false, error: errorOf(new TypeError(`Result is not JSON-serializable: ${e.message}`)) });
  }
  return text === undefined ? 'null' : text;
}

function answer(obj) {
  fs.writeSync(REPLY, answerText(obj));
  // Whatever the handler printed went out before (stdout and stderr are synchronous on
  // pipes), so the answer is complete here.
  fs.closeSync(REPLY);
}

function readExactly(fd, n) {
  const buf = Buffer.allocUnsafe(n);
  for (let off = 0; off < n; ) {
    const got = fs.readSync(fd, buf, off, n - off, null);
    if (got === 0) process.exit(0); // the supervisor is gone: so is this environment
    off += got;
  }
  return buf;
}

function writeFrame(obj) {
  const body = Buffer.from(answerText(obj), 'utf8');
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32LE(body.length, 0);
  const all = Buffer.concat([head, body]);
  for (let off = 0; off < all.length; ) off += fs.writeSync(REPLY, all, off, all.length - off);
}

async function loadHandler(entry) {
  const mod = entry.endsWith('.mjs') ? await import(entry) : require(entry);
  const fn = typeof mod === 'function' ? mod : typeof mod.default === 'function' ? mod.default : mod.handler;
  if (typeof fn !== 'function') throw new TypeError(`${entry} exports no handler function (default or handler)`);
  return fn;
}

// Ready ("R") either way: a handler that fails to load answers with its error (through
// `reply`, the mode's way of answering) and the process ends.
async function readyWithHandler(entry, reply) {
  let fn;
  try {
    fn = await loadHandler(entry);
  } catch (e) {
    fs.writeSync(REPLY, 'R');
    reply({ ok: false, error: errorOf(e) });
    process.exit(1);
  }
  fs.writeSync(REPLY, 'R');
  return fn;
}

// A reusable environment: the module stays loaded, its globals persist between
// invocations (what the function's owner opted into); each answer is one frame. The
// supervisor stops the whole process (SIGSTOP) once an answer is in and continues it at the
// next invocation: what an invocation left pending (a timer, a worker thread) runs then,
// in the next invocation, not while the environment waits.
// A handler that fails to load answers the first invocation with why: the supervisor drops
// whatever the runtime wrote before an invocation began.
async function serveMode(entry) {
  const nextWork = () => JSON.parse(readExactly(CTL, readExactly(CTL, 4).readUInt32LE(0)).toString('utf8'));
  const fn = await readyWithHandler(entry, (failed) => {
    nextWork();
    writeFrame(failed);
  });
  for (;;) {
    const msg = nextWork();
    try {
      const output = await fn(msg.event, msg.context);
      writeFrame({ ok: true, output: output === undefined ? null : output });
    } catch (e) {
      writeFrame({ ok: false, error: errorOf(e) });
    }
  }
}

async function handlerMode(entry) {
  const fn = await readyWithHandler(entry, answer);
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
else if (mode === 'serve') void serveMode(entry);
else inlineMode(entry);
