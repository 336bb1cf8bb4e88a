// Privileged: the language catalog through POST /invoke on a real server. A C++ program
// compiles (its own sandbox, with its own limits) and runs; a compile error is
// `compile_error` with the compiler's output; a compile step over its limits is stopped by
// the supervisor like any invocation, while the run step keeps the request's limits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { privilegedReason, startServer, type RunningServer } from './support/server.js';

const HELLO_CPP = `#include <iostream>
#include <string>
int main(int argc, char **argv) {
  std::string name;
  std::getline(std::cin, name);
  std::cout << "hello " << name << " " << (argc > 1 ? argv[1] : "") << " " << 6 * 7 << std::endl;
  return 0;
}
`;

describe.skipIf(privilegedReason() !== null)('compiled languages from the catalog (host gcc/g++)', () => {
  let s: RunningServer;
  beforeAll(async () => {
    s = await startServer();
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('GET /runtimes lists the built-in runtimes and c, cpp with their compile limits', async () => {
    const r = await s.request('/runtimes');
    expect(r.status).toBe(200);
    const names = (r.body.runtimes as Array<{ name: string }>).map((x) => x.name);
    expect(names).toEqual(['bash', 'c', 'cpp', 'node', 'python']);
    const cpp = r.body.runtimes.find((x: { name: string }) => x.name === 'cpp');
    expect(cpp).toMatchObject({ root: 'host', compiled: true, source: 'main.cpp' });
    expect(cpp.profiles).toContain('default');
  });

  it('a C++ program compiles in its own sandbox and runs with stdin and args', async () => {
    const r = await s.request('/invoke', { method: 'POST', body: { runtime: 'cpp', code: HELLO_CPP, stdin: 'Ada\n', args: ['x'] } });
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('ok');
    expect(r.body.stdout).toBe('hello Ada x 42\n');
    expect(r.body.compile).toMatchObject({ status: 'ok', reason: null, exitCode: 0 });
    expect(r.body.compile.limits.timeoutMs).toBe(15000);
  });

  it("a C program compiles and runs; its exit code is the invocation's", async () => {
    const r = await s.request('/invoke', { method: 'POST', body: { runtime: 'c', code: '#include <stdio.h>\nint main(void) { puts("c ok"); return 3; }\n' } });
    expect(r.body).toMatchObject({ status: 'error', exitCode: 3, stdout: 'c ok\n' });
  });

  it("a compile error is status compile_error with the compiler's output, and the code never runs", async () => {
    const r = await s.request('/invoke', { method: 'POST', body: { runtime: 'cpp', code: 'int main() { return undeclared_thing; }\n' } });
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('compile_error');
    expect(r.body.reason).toBeNull();
    expect(r.body.stdout).toBe('');
    expect(r.body.stderr).toContain('undeclared_thing');
    expect(r.body.stderr).toMatch(/error/);
    expect(r.body.compile).toMatchObject({ status: 'error' });
  });

  it("a compile step over its own time limit is stopped (compile_error, reason timeout); the run step's limits are the request's", async () => {
    const r = await s.request('/invoke', {
      method: 'POST',
      body: { runtime: 'cpp', code: HELLO_CPP, stdin: 'x\n', compileLimits: { timeoutMs: 50 }, limits: { timeoutMs: 5000 } },
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'compile_error', reason: 'timeout' });
    expect(r.body.compile.limits.timeoutMs).toBe(50);
    expect(r.body.limits.timeoutMs).toBe(5000);
    // The run step's limits do not bound the compile step: each step gets its own.
    const ok = await s.request('/invoke', { method: 'POST', body: { runtime: 'cpp', code: HELLO_CPP, stdin: 'y\n', limits: { timeoutMs: 300 } } });
    expect(ok.body.status).toBe('ok');
    expect([ok.body.limits.timeoutMs, ok.body.compile.limits.timeoutMs]).toEqual([300, 15000]);
  });

  it('a compile step over its memory limit is stopped too (compile_error, reason memory)', async () => {
    const r = await s.request('/invoke', { method: 'POST', body: { runtime: 'cpp', code: HELLO_CPP, compileLimits: { memoryMb: 16 } } });
    expect(r.body.status).toBe('compile_error');
    expect(['memory', 'signal']).toContain(r.body.reason);
  });

  it('compileLimits above the profile max are refused; compileLimits with a built-in runtime are refused; an unknown runtime is 400', async () => {
    const over = await s.request('/invoke', { method: 'POST', body: { runtime: 'cpp', code: HELLO_CPP, compileLimits: { timeoutMs: 3_600_000 } } });
    expect(over.status).toBe(400);
    const builtin = await s.request('/invoke', { method: 'POST', body: { runtime: 'node', code: '1', compileLimits: { timeoutMs: 10 } } });
    expect(builtin.status).toBe(400);
    const unknown = await s.request('/invoke', { method: 'POST', body: { runtime: 'cobol', code: 'x' } });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.message).toContain("no runtime named 'cobol'");
  });
});
