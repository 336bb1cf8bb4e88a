// A request body read straight from Node's IncomingMessage when the app is served by
// @hono/node-server. Hono reads a body through a web Request built around the message (an
// AbortController, undici's Request, two ReadableStreams around the Node stream): the largest
// part of the request path's own CPU after the socket writes, for a body of a few hundred
// bytes. The text is left in Hono's body cache, where c.req.json() and the route's validator
// read it; the limits and the errors stay those of the body-limit middleware (app.ts) and
// jsonRequest (./validate.ts). Without a Node message (app.request() in tests) Hono reads it.
import { IncomingMessage } from 'node:http';
import type { Context } from 'hono';

/** The Node request under `c`, or null (no socket: app.request()). */
export function nodeIncoming(c: Context): IncomingMessage | null {
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming;
  return incoming instanceof IncomingMessage ? incoming : null;
}

/** UTF-8 with a leading BOM dropped and bad sequences replaced, as the Fetch standard's text() decodes. */
const utf8 = new TextDecoder();

/** The error Node gives a read of a message whose client hung up (clientAborted() knows it). */
function hungUp(): Error {
  return Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
}

/**
 * Reads the rest of `incoming`; rejects with `tooLarge()` once more than `maxBytes` arrived
 * (the rest is left unread, for the server to drain or cut), and with an `aborted`
 * ECONNRESET error when the client hangs up before the end.
 */
export function readBody(incoming: IncomingMessage, maxBytes: number, tooLarge: () => Error): Promise<string> {
  return new Promise((resolve, reject) => {
    // A client gone before the read began (during authentication, say): the message is
    // destroyed, its buffered bytes dropped, and its 'close' already emitted, so no listener
    // below would ever hear of it.
    if (incoming.destroyed || incoming.errored !== null) {
      reject(hungUp());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (): void => {
      incoming.off('data', onData);
      incoming.off('end', onEnd);
      incoming.off('error', onError);
      incoming.off('close', onClose);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) {
        stop();
        incoming.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      stop();
      resolve(utf8.decode(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    };
    const onError = (e: Error): void => {
      stop();
      reject(e);
    };
    const onClose = (): void => {
      if (incoming.complete) return;
      stop();
      reject(hungUp());
    };
    incoming.on('data', onData);
    incoming.on('end', onEnd);
    incoming.on('error', onError);
    incoming.on('close', onClose);
  });
}

/** Whether the body of `incoming` can still be read here: nothing of it was read, nor is it cached. */
export function bodyUnread(c: Context, incoming: IncomingMessage): boolean {
  return !incoming.readableDidRead && Object.keys(c.req.bodyCache).length === 0;
}

/** Leaves the body's text where c.req.json() and text() look first (Hono keeps promises there, whatever its type says). */
export function cacheBodyText(c: Context, text: Promise<string>): void {
  (c.req.bodyCache as { text?: Promise<string> }).text = text;
}
