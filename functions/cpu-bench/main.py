# A CPU benchmark: a tight arithmetic loop of event["iterations"] rounds, timed inside
# the sandbox (the response's cpuMs and durationMs add the sandbox's own view).
import time

MAX_ITERATIONS = 1_000_000_000


def handler(event, context):
    n = int(event.get("iterations", 1_000_000)) if isinstance(event, dict) else 1_000_000
    if not 0 <= n <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be between 0 and {MAX_ITERATIONS}: got {n}")
    started = time.perf_counter()
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    elapsed = time.perf_counter() - started
    return {"iterations": n, "elapsedMs": round(elapsed * 1000, 3), "checksum": acc}
