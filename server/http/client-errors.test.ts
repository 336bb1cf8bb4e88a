import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { clientErrorResponse, onClientError } from './client-errors.js';

const parseError = (code: string, reason: string) => Object.assign(new Error(`Parse Error: ${reason}`), { code, reason });

describe('requests the HTTP parser refuses', () => {
  it.each([
    [parseError('HPE_INVALID_METHOD', 'Invalid method encountered'), 400, 'BAD_REQUEST', 'Cannot parse HTTP request: Invalid method encountered'],
    [parseError('HPE_HEADER_OVERFLOW', 'Header overflow'), 431, 'HEADERS_TOO_LARGE', 'Cannot read request: its request line and headers pass 16384 bytes'],
    [Object.assign(new Error('timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), 408, 'REQUEST_TIMEOUT', 'Cannot read request: it did not arrive in time'],
  ])('%s is answered %i %s in the error shape', (err, status, code, message) => {
    const answer = clientErrorResponse(err);
    expect(answer?.status).toBe(status);
    expect(answer?.toBody().error).toMatchObject({ code, message });
  });

  it('a reset connection gets no answer', () => {
    expect(clientErrorResponse(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))).toBeNull();
  });

  it('writes one JSON response and ends the connection', async () => {
    const socket = new PassThrough();
    const written: Buffer[] = [];
    socket.on('data', (d: Buffer) => written.push(d));
    onClientError(parseError('HPE_INVALID_METHOD', 'Invalid method encountered'), socket);
    await new Promise((r) => socket.on('end', r));
    const text = Buffer.concat(written).toString();
    expect(text.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(text).toContain('Content-Type: application/json');
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).error.code).toBe('BAD_REQUEST');
  });

  it('does not write into a connection that already carries a response: it closes it', () => {
    const socket = Object.assign(new PassThrough(), { bytesWritten: 100 });
    let wrote = false;
    socket.on('data', () => (wrote = true));
    onClientError(parseError('HPE_INVALID_METHOD', 'Invalid method encountered'), socket);
    expect(wrote).toBe(false);
    expect(socket.destroyed).toBe(true);
  });
});
