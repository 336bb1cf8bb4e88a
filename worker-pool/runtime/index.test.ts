// The runtime records and what code reads from them, one table row per runtime: nothing
// outside worker-pool/runtime knows a runtime by its name.
import { describe, expect, it } from 'vitest';
import { RUNTIMES as NAMES, type Runtime } from '../../profiles/schema.js';
import { bootstrapFor, envFor, handlerInput, inlineRun, inlineWork, noAnswerMessage, parseAnswer, runtimeDef, RUNTIMES } from './index.js';

interface Row {
  runtime: Runtime;
  argv: string[];
  bootstrap: string;
  /** inlineWork({ code: 'x', args: ['a', 'b'], env: { K: 'v' } }) */
  work: string;
  eventOnStdin: boolean;
}

const ROWS: Row[] = [
  { runtime: 'node', argv: ['/usr/bin/node', '/fn/main.js', 'a', 'b'], bootstrap: 'node.js', work: '{"code":"x","args":["a","b"],"env":{"K":"v"}}', eventOnStdin: false },
  { runtime: 'python', argv: ['/usr/bin/python3', '/fn/main.py', 'a', 'b'], bootstrap: 'python.py', work: '{"code":"x","args":["a","b"],"env":{"K":"v"}}', eventOnStdin: false },
  { runtime: 'bash', argv: ['/usr/bin/bash', '/fn/main.sh', 'a', 'b'], bootstrap: 'bash.sh', work: 'x\0K=v\0\0a\0b\0', eventOnStdin: true },
];

describe('runtime records', () => {
  it('has one record per runtime the profile schema knows, named as its key', () => {
    expect(Object.keys(RUNTIMES).sort()).toEqual([...NAMES].sort());
    for (const name of NAMES) expect(runtimeDef(name).name).toBe(name);
  });

  describe.each(ROWS)('$runtime', (row) => {
    const rt = runtimeDef(row.runtime);

    it('runs inline code from its source file under /fn, with the arguments after it', () => {
      expect(inlineRun(rt, 'x', ['a', 'b'])).toEqual({ argv: row.argv, files: [{ name: rt.source, content: 'x' }] });
    });

    it('starts its warm bootstrap from /fn/.zviz with the mode and entry, and ships the bootstrap file', () => {
      const b = bootstrapFor(rt, 'handler', '/fn/h');
      expect(b.argv).toEqual([rt.bootstrap.interpreter, `/fn/.zviz/bootstrap-${row.bootstrap}`, 'handler', '/fn/h']);
      expect(b.file.name).toBe(`.zviz/bootstrap-${row.bootstrap}`);
      expect(b.file.content).toMatch(/^(#|\/\/) ZViz bootstrap for /);
    });

    it('encodes inline work as its bootstrap reads it', () => {
      expect(inlineWork(rt, { code: 'x', args: ['a', 'b'], env: { K: 'v' } })).toBe(row.work);
    });

    it('hands a deployed function its event as the contract says', () => {
      const input = handlerInput(rt, { n: 1 }, { version: 2 });
      expect(input).toEqual(row.eventOnStdin ? { control: '', stdin: '{"n":1}' } : { control: '{"event":{"n":1},"context":{"version":2}}', stdin: '' });
    });
  });
});

describe('parseAnswer', () => {
  const node = runtimeDef('node');
  const bash = runtimeDef('bash');

  it.each([
    ['node, a result', node, '{"ok":true,"output":{"a":1}}', '', { ok: true, output: { a: 1 } }],
    ['node, a thrown error', node, '{"ok":false,"error":{"message":"boom","stack":null}}', '', { ok: false, error: { message: 'boom', stack: null } }],
    ['node, no reply', node, null, '{"ignored":true}', null],
    ['node, an empty reply', node, '  ', '', null],
    ['node, not JSON', node, '{', '', { ok: false, error: { message: "Cannot read the function's result: the answer is not JSON", stack: null } }],
    ['node, JSON without ok', node, '[1]', '', { ok: false, error: { message: 'The runtime bootstrap answered something unexpected', stack: null } }],
    ['bash, JSON on stdout', bash, null, '{"a":1}\n', { ok: true, output: { a: 1 } }],
    ['bash, nothing on stdout', bash, '{"ok":true,"output":1}', '', null],
    ['bash, stdout not JSON', bash, null, 'hello', { ok: false, error: { message: "Cannot read the function's result: stdout is not JSON", stack: null } }],
  ])('%s', (_what, rt, reply, stdout, expected) => {
    expect(parseAnswer(rt, reply, stdout)).toEqual(expected);
  });

  it('refuses an answer nested deeper than 64 levels (stdout or reply) and takes one at 64, never overflowing the stack', () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const tooDeep = { ok: false, error: { message: "Cannot read the function's result: it is nested deeper than 64 levels", stack: null } };
    expect(parseAnswer(bash, null, deep)).toEqual(tooDeep);
    expect(parseAnswer(node, `{"ok":true,"output":${deep}}`, '')).toEqual(tooDeep);
    expect(parseAnswer(bash, null, '['.repeat(65) + ']'.repeat(65))).toEqual(tooDeep);
    const at64 = '['.repeat(64) + ']'.repeat(64);
    expect(parseAnswer(bash, null, at64)).toEqual({ ok: true, output: JSON.parse(at64) });
    expect(parseAnswer(node, `{"ok":true,"output":${at64}}`, '')).toEqual({ ok: true, output: JSON.parse(at64) });
  });

  it("says in the contract's words that no answer came", () => {
    expect(noAnswerMessage(node)).toBe("Cannot read the function's result: the handler ended without answering");
    expect(noAnswerMessage(bash)).toBe("Cannot read the function's result: the handler printed nothing on stdout");
  });
});

describe('envFor', () => {
  it("puts the request's variables over the base environment, and nothing of the server's", () => {
    expect(envFor({ HOME: '/work', A: 'b' })).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/work', LANG: 'C.UTF-8', A: 'b' });
    expect(Object.getPrototypeOf(envFor(JSON.parse('{"__proto__":{"x":1}}')))).toBe(Object.prototype);
  });
});
