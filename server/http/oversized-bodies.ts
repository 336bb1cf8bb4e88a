// Refusing a body that is too large so that every client sees the refusal.
//
// Two things stood between a client and its 413. With `Expect: 100-continue`, Node said
// "100 Continue" before the app could refuse by the declared length, inviting the whole
// body. And after answering, Node closed the socket with the body still arriving: the
// kernel answers unread data on a closed socket with a reset, which can destroy the 413
// in the client's receive buffer before it is read (Node's fetch then reports EPIPE).
// Here the declared length is judged before any 100 Continue, and a connection closed
// with its request body unread first drains (discards) it, up to a bound in bytes and
// time: the lingering close nginx does.
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { ApiError } from './errors.js';

/** The refusal of a body over `maxBytes`; `declared` is its Content-Length when it has one. */
export function payloadTooLarge(maxBytes: number, declared: string | undefined): ApiError {
  // A chunked body is cut off at the limit, so its size is known only when declared.
  const current = declared === undefined ? '' : `: current size is ${declared} bytes`;
  // The rest of the body is never read, so the connection cannot carry another request:
  // say so, or a keep-alive client reuses a socket the server closes.
  return new ApiError('PAYLOAD_TOO_LARGE', `Cannot read request body: body must be at most ${maxBytes} bytes${current}`, { maxBytes }, { headers: { Connection: 'close' } });
}

export interface LingerOptions {
  /** Most bytes discarded after the answer before the connection is cut anyway. */
  maxBytes: number;
  /** Longest the connection stays open after the answer. */
  maxMs: number;
}

export const DEFAULT_LINGER: LingerOptions = { maxBytes: 64 * 1024 * 1024, maxMs: 5000 };

/** Half-closes `socket` (the answer and a FIN go out), discards what still comes, then closes. */
function linger(socket: Socket, opts: LingerOptions): void {
  let seen = 0;
  const done = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  const timer = setTimeout(done, opts.maxMs);
  timer.unref();
  socket.on('data', (d: Buffer) => {
    seen += d.length;
    if (seen > opts.maxBytes) done();
  });
  socket.once('end', done); // the client has sent everything and closed its side
  socket.once('close', () => clearTimeout(timer));
  socket.end();
  socket.resume();
}

/**
 * Installs both on `server`: refuses by Content-Length before 100 Continue, and lingers
 * on closing a connection whose last request body was not read to its end.
 */
export function guardOversizedBodies(server: Server, maxBodyBytes: number, opts: LingerOptions = DEFAULT_LINGER): void {
  const lastRequest = new WeakMap<Socket, IncomingMessage>();
  server.on('connection', (socket: Socket & { destroySoon?: () => void }) => {
    const destroySoon = socket.destroySoon;
    if (typeof destroySoon !== 'function') return;
    // Node calls destroySoon once the last response of a connection is written.
    socket.destroySoon = function lingeringClose(this: Socket) {
      const req = lastRequest.get(socket);
      if (req === undefined || req.complete || socket.destroyed) return destroySoon.call(this);
      linger(socket, opts);
    };
  });
  server.prependListener('request', (req: IncomingMessage) => lastRequest.set(req.socket, req));

  // With a 'checkContinue' listener Node leaves the 100 Continue to us.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    lastRequest.set(req.socket, req);
    const declared = req.headers['content-length'];
    if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > maxBodyBytes) {
      const err = payloadTooLarge(maxBodyBytes, declared);
      const body = JSON.stringify(err.toBody());
      res.writeHead(err.status, STATUS_CODES[err.status], { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
      res.end(body);
      return;
    }
    res.writeContinue();
    server.emit('request', req, res);
  });
}
