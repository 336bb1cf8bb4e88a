// Request validation in the project's error shape: the JSON body gate every JSON route puts
// before its schema (415, BAD_JSON), and the one hook every route's zod schemas report to
// (400 VALIDATION_FAILED naming the field or parameter, never zod's raw output).
import type { MiddlewareHandler } from 'hono';
import type { z } from 'zod';
import { ApiError } from './errors.js';
import { bodyUnread, cacheBodyText, nodeIncoming, readBody } from './node-body.js';

export interface FieldIssue {
  /** `limits.memoryMb`, `args[3]`, `env["1BAD"]`; '' for the body itself. */
  path: string;
  message: string;
}

type Issue = z.core.$ZodIssue;
type Segment = PropertyKey;

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const SHOWN_MAX = 60;

function formatPath(path: readonly Segment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && IDENTIFIER.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

function valueAt(root: unknown, path: readonly Segment[]): unknown {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, k)) return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/** A short rendering of a client value: the message must stay readable when the value is 1 MiB. */
export function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    // JSON.stringify recurses: a body nested thousands deep (JSON.parse took it) overflows
    // the stack. Say what it is instead.
    text = Array.isArray(value) ? '[…]' : '{…}';
  }
  return text.length > SHOWN_MAX ? `${text.slice(0, SHOWN_MAX)}…` : text;
}

const TYPE_NAMES: Record<string, string> = { int: 'an integer', object: 'an object', array: 'an array' };

function describe(issue: Issue, value: unknown): string {
  switch (issue.code) {
    case 'invalid_type':
      if (value === undefined) return 'is required';
      return `must be ${TYPE_NAMES[issue.expected] ?? `a ${issue.expected}`}: current value is ${show(value)}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => show(v)).join(', ')}: current value is ${show(value)}`;
    case 'too_big':
    case 'too_small': {
      const bound = issue.code === 'too_big' ? 'at most' : 'at least';
      const limit = issue.code === 'too_big' ? issue.maximum : issue.minimum;
      if (issue.origin === 'string' && typeof value === 'string') {
        return `must be ${bound} ${limit} characters: current length is ${value.length}`;
      }
      if (issue.origin === 'array' && Array.isArray(value)) {
        return `must have ${bound} ${limit} items: current length is ${value.length}`;
      }
      return `must be ${bound} ${limit}: current value is ${show(value)}`;
    }
    case 'invalid_format':
      return `${issue.message}: current value is ${show(value)}`;
    case 'invalid_key': {
      // The key itself is the last path segment, so the path already shows the value.
      const inner = issue.issues[0];
      return `key ${inner?.message ?? 'is not valid'}`;
    }
    default:
      // custom refinements carry their own value in the message (see invocation/schemas.ts).
      return issue.message;
  }
}

/** zod issues → our details: one entry per problem, unknown keys one entry each. */
export function toFieldIssues(issues: readonly Issue[], input: unknown): FieldIssue[] {
  const out: FieldIssue[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: formatPath([...issue.path, key]), message: 'is not a known field' });
    } else {
      out.push({ path: formatPath(issue.path), message: describe(issue, valueAt(input, issue.path)) });
    }
  }
  return out;
}

/** Whether reading the body failed because the client went away before sending all of it. */
export function clientAborted(e: unknown): boolean {
  const err = e as NodeJS.ErrnoException | null;
  return err?.code === 'ECONNRESET' || err?.message === 'aborted';
}

/** Nobody is left to answer, and nothing went wrong here: a refusal (logged at debug), not INTERNAL. */
export function abortedBody(): ApiError {
  return new ApiError('BAD_REQUEST', 'Cannot read request body: the connection closed before all of it arrived');
}

/** application/json, with well-formed parameters only (as the route validator's own gate requires too). */
const JSON_CONTENT_TYPE = /^application\/json(;\s*[a-zA-Z0-9-]+=[^;]+)*$/i;

function isJson(contentType: string | undefined): boolean {
  return contentType !== undefined && JSON_CONTENT_TYPE.test(contentType.trim());
}

/**
 * For a route with a JSON body, before its schema is checked: refuses a non-JSON content
 * type (415) and a body that is not JSON (400 BAD_JSON), and turns a client that hung up
 * midway into a refusal. The parsed body stays in Hono's body cache, where the route's
 * validator reads it.
 */
export function jsonRequest(): MiddlewareHandler {
  return async function jsonRequest(c, next) {
    const contentType = c.req.header('content-type');
    if (!isJson(contentType)) {
      throw new ApiError(
        'UNSUPPORTED_MEDIA_TYPE',
        `Cannot read request body: content type must be application/json: current value is ${contentType === undefined ? 'missing' : `'${contentType}'`}`,
      );
    }
    try {
      // A declared length was judged by the body limit before authentication; the body is
      // read now, straight from Node's message where there is one (./node-body.ts).
      const incoming = nodeIncoming(c);
      const declared = c.req.header('content-length');
      if (incoming !== null && declared !== undefined && c.req.header('transfer-encoding') === undefined && bodyUnread(c, incoming)) {
        cacheBodyText(c, readBody(incoming, Number(declared), () => new Error(`Cannot read request body: more than the declared ${declared} bytes arrived`)));
      }
      await c.req.json();
    } catch (e) {
      if (e instanceof SyntaxError) throw new ApiError('BAD_JSON', `Cannot parse request body as JSON: ${e.message}`);
      // Anything but a hang-up (the body limit's own error, which its middleware turns into
      // a 413) goes on as it is.
      throw clientAborted(e) ? abortedBody() : e;
    }
    await next();
  };
}

/** What a failed check of each part of a request is called in the message. */
const WHERE: Record<string, { checked: string; whole: string; part: string }> = {
  json: { checked: 'request body', whole: 'body', part: 'field' },
  query: { checked: 'query', whole: 'query', part: 'parameter' },
  param: { checked: 'path', whole: 'path', part: 'parameter' },
};

/**
 * The one hook every route's schemas report to (@hono/zod-openapi's defaultHook): a
 * failure becomes 400 VALIDATION_FAILED in the project's error shape, one detail per
 * problem, the message naming the first. Never zod's raw output.
 */
export function validationHook(result: { success: boolean; target: string; data?: unknown; error?: z.ZodError }): void {
  if (result.success || result.error === undefined) return;
  const where = WHERE[result.target] ?? { checked: result.target, whole: result.target, part: 'field' };
  const details = toFieldIssues(result.error.issues, result.data);
  const first = details[0];
  const subject = first === undefined || first.path === '' ? where.whole : `${where.part} '${first.path}'`;
  let message = first?.message ?? 'is not valid';
  if (where.part === 'parameter' && message === 'is not a known field') message = 'is not a known parameter';
  const more = details.length > 1 ? ` (and ${details.length - 1} more)` : '';
  throw new ApiError('VALIDATION_FAILED', `Cannot validate ${where.checked}: ${subject} ${message}${more}`, details);
}
