// Pins the promise a 503 makes: nothing ran and nothing the client asked for changed, so
// the request may be sent again (the fleet's HAProxy retries a 503 on another host:
// deploy/haproxy/haproxy.cfg, test/deploy-manifests.test.ts). A new code answered with 503
// fails here until it is added below with the reason it keeps that promise.
import { describe, expect, it } from 'vitest';
import { ERROR_STATUS, type ErrorCode } from './errors.js';

const RETRY_SAFE: Record<string, string> = {
  SHUTTING_DOWN: 'refused at the door of POST /invoke, and again before admission, once draining began (server/ops/drain.ts); /readyz',
  NOT_READY: 'GET /readyz only (and HAProxy when no host is up): nothing to run',
  STATE_UNAVAILABLE:
    'a read, or an admission that failed at Redis (server/state/guard.ts): no sandbox was asked for; a lease the script may have taken expires with its TTL. Writes a client asked for answer STATE_UNCERTAIN (502)',
  SANDBOX_UNAVAILABLE:
    'the sandbox could not be made: the native layer failed before GO (worker-pool/sandbox.ts settleRun marks a failure after it `started`: SANDBOX_FAILED, 502), or this host takes no bundles',
  OVERLOADED: "the pool's queue was full, a job slot was not free, or the function kept being redeployed during admission: refused before any sandbox ran",
  UPLOAD_STORE_UNAVAILABLE: 'the shared object store did not answer: an upload is stored by its digest, so sending it again stores the same blob; a fetch for an invocation happens before admission',
};

describe('the 503 contract', () => {
  it('every code answered with 503 is one that is refused before anything ran or changed', () => {
    const codes503 = (Object.keys(ERROR_STATUS) as ErrorCode[]).filter((c) => ERROR_STATUS[c] === 503).sort();
    expect(codes503).toEqual(Object.keys(RETRY_SAFE).sort());
  });

  it('a failure after work may have happened is a 502, never a 503 or a 500', () => {
    expect(ERROR_STATUS.SANDBOX_FAILED).toBe(502);
    expect(ERROR_STATUS.STATE_UNCERTAIN).toBe(502);
  });
});
