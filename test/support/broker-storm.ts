// A storm of denied calls for the trusted CPU budget's tests (test/layer-b.test.ts in an
// invocation, test/reuse.test.ts in a boot): python code that runs `threads` threads, each
// a machine-code loop (GIL released) around one raw syscall that the filter turns into a
// notification, so the storm is as dense on an emulated CPU, where an interpreter slows far
// more than the supervisor, as on a real one. It never ends: the budget must end it.
// Pure: no root.

/** The python source of the storm; `nr` is an x86_64 syscall number the profile denies through the supervisor. */
export function brokerStormPython(nr: number, threads = 16): string {
  //   1: mov eax, NR; mov rdi, -1; mov esi, 1; mov edx, 1; xor r10d, r10d; syscall; jmp 1b
  const nrLe = Buffer.alloc(4);
  nrLe.writeUInt32LE(nr);
  const loop = `b8${nrLe.toString('hex')}48c7c7ffffffffbe01000000ba010000004531d20f05ebe3`;
  return `
import ctypes, mmap, threading
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex('${loop}'))
storm = ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
ts = [threading.Thread(target=storm) for _ in range(${threads})]
for t in ts: t.start()
for t in ts: t.join()
`;
}

/** The trusted CPU budget of an invocation (native/src/sup.h): a tenth of timeoutMs × cpus, at least 100 ms. */
export function trustedBudgetMs(timeoutMs: number, cpus: number): number {
  return Math.max(100, (timeoutMs * cpus) / 10);
}
