# ZViz bootstrap for python, run inside a pre-warmed sandbox before its invocation arrives.
#   python3 bootstrap.py handler <file>     load def handler(event, context), say ready, run it
#   python3 bootstrap.py inline <path>       say ready, then run the code sent as __main__
#                                            (work: {"code", "args", "env"})
#   python3 bootstrap.py serve <file>        a reusable environment: load the handler, say ready,
#                                            then serve invocations one at a time, each framed as
#                                            a u32 little-endian length and the bytes (fd 3 in, fd 4 out)
# The work arrives on fd 3; the answer goes to fd 4 after a one-byte "R" (runtime loaded).
# Closing fd 4 says the answer is complete: the supervisor answers then, while this exits.
import importlib.util
import json
import os
import sys
import traceback
import types

CTL, REPLY = 3, 4


def read_all(fd):
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def error_of(e):
    return {"message": f"{type(e).__name__}: {e}", "stack": "".join(traceback.format_exception(e))}


def answer_text(obj):
    try:
        return json.dumps(obj)
    except (TypeError, ValueError) as e:
        return json.dumps({"ok": False, "error": error_of(TypeError(f"Result is not JSON-serializable: {e}"))})


def answer(obj):
    # What the handler printed goes out first: the answer ends the invocation's output.
    sys.stdout.flush()
    sys.stderr.flush()
    write_all(REPLY, answer_text(obj).encode())
    os.close(REPLY)


def load_handler(entry):
    sys.path.insert(0, os.path.dirname(entry))
    spec = importlib.util.spec_from_file_location("handler", entry)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["handler"] = mod
    spec.loader.exec_module(mod)
    return getattr(mod, "handler")


def read_exactly(fd, n):
    chunks = []
    while n > 0:
        b = os.read(fd, n)
        if not b:
            sys.exit(0)  # the supervisor is gone: so is this environment
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def write_frame(obj):
    body = answer_text(obj).encode()
    # What the handler printed goes out before the answer that ends its invocation.
    sys.stdout.flush()
    sys.stderr.flush()
    write_all(REPLY, len(body).to_bytes(4, "little") + body)


def ready_with_handler(entry, reply):
    # Ready ("R") either way: a handler that fails to load answers with its error (through
    # `reply`, the mode's way of answering) and the process ends.
    try:
        fn = load_handler(entry)
    except BaseException as e:  # noqa: BLE001 - any load failure is the function's error
        write_all(REPLY, b"R")
        reply({"ok": False, "error": error_of(e)})
        sys.exit(1)
    write_all(REPLY, b"R")
    return fn


def serve_mode(entry):
    # A reusable environment: the module stays imported, its globals persist between
    # invocations (what the function's owner opted into); each answer is one frame.
    # A handler that fails to load answers the first invocation with why: the supervisor
    # drops whatever the runtime wrote before an invocation began.
    def next_work():
        return json.loads(read_exactly(CTL, int.from_bytes(read_exactly(CTL, 4), "little")))

    def failed(obj):
        next_work()
        write_frame(obj)

    fn = ready_with_handler(entry, failed)
    while True:
        msg = next_work()
        try:
            out = fn(msg["event"], msg["context"])
        except Exception as e:  # noqa: BLE001 - the handler's error is its answer
            write_frame({"ok": False, "error": error_of(e)})
            continue
        write_frame({"ok": True, "output": out})


def handler_mode(entry):
    fn = ready_with_handler(entry, answer)
    msg = json.loads(read_all(CTL))
    try:
        out = fn(msg["event"], msg["context"])
    except BaseException as e:  # noqa: BLE001
        answer({"ok": False, "error": error_of(e)})
        sys.exit(1)
    answer({"ok": True, "output": out})
    sys.exit(0)


def inline_mode(entry):
    write_all(REPLY, b"R")
    work = json.loads(read_all(CTL))
    os.close(CTL)
    os.close(REPLY)
    os.environ.update(work["env"])
    code = work["code"]
    sys.argv = [entry, *work["args"]]
    sys.path[0] = os.path.dirname(entry)
    # Run as the real __main__ module, so that pickle (multiprocessing) finds what the
    # code defines, as it does when python runs the file itself.
    main = types.ModuleType("__main__")
    main.__file__ = entry
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    exec(compile(code, entry, "exec"), main.__dict__)


if __name__ == "__main__":
    mode, entry = sys.argv[1:3]
    if mode == "handler":
        handler_mode(entry)
    elif mode == "serve":
        serve_mode(entry)
    else:
        inline_mode(entry)
