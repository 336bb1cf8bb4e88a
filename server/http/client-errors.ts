// Requests the HTTP parser refuses never reach the app: Node answers them itself, with a
// bare status line (400, 431, 408) and no body. This answers them in the API's error shape
// instead, so a client sees one contract whatever layer refused it.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ApiError } from './errors.js';

/** What Node's 'clientError' event carries (llhttp's code and reason on parse errors). */
interface ClientError extends Error {
  code?: string;
  reason?: string;
}

/** The API error for a request the HTTP layer could not take, or null when nobody is there to answer. */
export function clientErrorResponse(err: ClientError): ApiError | null {
  switch (err.code) {
    case 'ECONNRESET':
    case 'EPIPE':
      return null;
    case 'HPE_HEADER_OVERFLOW':
      return new ApiError('HEADERS_TOO_LARGE', 'Cannot read request: its request line and headers pass 16384 bytes');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ApiError('REQUEST_TIMEOUT', 'Cannot read request: it did not arrive in time');
    default:
      return new ApiError('BAD_REQUEST', `Cannot parse HTTP request: ${err.reason ?? err.message}`, { parserCode: err.code ?? null });
  }
}

/** A 'clientError' listener for the server: one JSON answer, then the connection closes. */
export function onClientError(err: ClientError, socket: Duplex): void {
  const answer = clientErrorResponse(err);
  // As Node's own handler: only on a connection nothing was written to yet; bytes after a
  // response already under way would corrupt it.
  const written = (socket as Partial<Socket>).bytesWritten ?? 0;
  if (answer === null || !socket.writable || written > 0) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(answer.toBody());
  socket.end(
    `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}\r\n` +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Connection: close\r\n\r\n' +
      body,
  );
}

/**
 * The request targets @hono/node-server refuses before the app sees them (a backslash in
 * the path, an absolute-form or authority-form target, no Host header), answered with
 * the API's error shape instead of its empty 400. Null when the request can go on.
 */
export function requestTargetError(url: string | undefined, host: string | undefined): ApiError | null {
  if (url === undefined || !url.startsWith('/')) {
    return new ApiError('BAD_REQUEST', `Cannot route request: the target must be a path starting with '/': current value is ${JSON.stringify((url ?? '').slice(0, 60))}`);
  }
  const path = url.split('?')[0] ?? '';
  if (path.includes('\\')) {
    return new ApiError('BAD_REQUEST', `Cannot route request: the path must not contain a backslash: current value is ${JSON.stringify(path.slice(0, 60))}`);
  }
  if (host === undefined || host === '') return new ApiError('BAD_REQUEST', 'Cannot route request: the Host header is missing');
  return null;
}

/** Puts requestTargetError in front of the server's request listeners. */
export function guardRequestTargets(server: import('node:http').Server): void {
  const listeners = server.listeners('request') as Array<(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void>;
  server.removeAllListeners('request');
  server.on('request', function guardedRequest(req, res) {
    const err = requestTargetError(req.url, req.headers.host);
    if (err) {
      const body = JSON.stringify(err.toBody());
      res.writeHead(err.status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
      res.end(body);
      req.resume();
      return;
    }
    for (const l of listeners) l.call(server, req, res);
  });
}
