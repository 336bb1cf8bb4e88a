/* zviz.h — the one public header of libzviz.
 *
 * The ABI is deliberately narrow: a version, a host probe, and the life cycle of one
 * sandbox (spawn → run → release, with kill from any thread). Everything else in the
 * library is hidden (-fvisibility=hidden). Every function returns 0 or a negative
 * `enum zviz_code` and fills the caller-owned `struct zviz_error` on failure.
 *
 * Bump ZVIZ_ABI_VERSION whenever a prototype, a struct layout or an enum changes:
 * the TypeScript side refuses to load a library whose version differs from its own.
 */
#ifndef ZVIZ_H
#define ZVIZ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZVIZ_ABI_VERSION 11
#define ZVIZ_EXPORT __attribute__((visibility("default")))

enum zviz_code {
	ZVIZ_OK = 0,
	ZVIZ_E_INVALID_SPEC = 1, /* the spec from the caller is malformed */
	ZVIZ_E_SYSTEM = 2,       /* a system call on the trusted side failed */
	ZVIZ_E_SPAWN = 3,        /* the supervisor could not be started */
	ZVIZ_E_PROTOCOL = 4,     /* the supervisor broke the control protocol or died */
	ZVIZ_E_NAMESPACE = 5,    /* creating or joining a namespace failed */
	ZVIZ_E_MOUNT = 6,        /* building the sandbox's filesystem view failed */
	ZVIZ_E_CGROUP = 7,       /* creating, limiting or cleaning the cgroup failed */
	ZVIZ_E_CAPS = 8,         /* dropping privileges failed */
	ZVIZ_E_EXEC = 9,         /* the runtime could not be executed */
	ZVIZ_E_TOO_LARGE = 10,   /* an input exceeds a fixed bound */
	ZVIZ_E_LANDLOCK = 11,    /* building or enforcing the Landlock ruleset failed */
	ZVIZ_E_SECCOMP = 12,     /* compiling or loading the seccomp filter failed */
	ZVIZ_E_NETWORK = 13,     /* joining or configuring the network namespace failed */
	ZVIZ_E__COUNT
};

struct zviz_error {
	int32_t code;      /* enum zviz_code */
	int32_t sys_errno; /* errno of the failing call, 0 if none */
	char msg[256];     /* names the failing step and quotes the value */
};

/* Bits of zviz_result.flags. */
#define ZVIZ_RF_TIMED_OUT        (1u << 0)
#define ZVIZ_RF_OOM_KILLED       (1u << 1)
#define ZVIZ_RF_PIDS_LIMITED     (1u << 2)
#define ZVIZ_RF_STDOUT_TRUNCATED (1u << 3)
#define ZVIZ_RF_STDERR_TRUNCATED (1u << 4)
#define ZVIZ_RF_SIGNALED         (1u << 5)
#define ZVIZ_RF_KILLED_BY_CALLER (1u << 6)
#define ZVIZ_RF_OUTPUT_LIMIT     (1u << 7) /* killed: stdout or stderr exceeded the cap, or a log its volume limit */
#define ZVIZ_RF_BROKER_DIED      (1u << 8) /* killed: the supervisor's seccomp notification handling failed
                                              * and closed the listener (fail closed; named after the former
                                              * broker process) */
#define ZVIZ_RF_SECCOMP_KILLED   (1u << 9) /* a process died of SIGSYS (seccomp kill action) */
#define ZVIZ_RF_TRUSTED_CPU      (1u << 10) /* killed: the trusted side's CPU for it passed its budget */
#define ZVIZ_RF_ANSWERED         (1u << 11) /* sent at a warm function's answer (fd 4 closed, or a
					       * reused runtime's framed answer), before its runtime
					       * exited: exit_code is 0, not a process status */
/* Reusable environments (spec flag REUSE): */
#define ZVIZ_RF_REUSABLE         (1u << 12) /* reset done, parked again: the handle takes another GO */
#define ZVIZ_RF_PEAK_ENV         (1u << 13) /* memory_peak_bytes is the environment's peak, not the invocation's */
#define ZVIZ_RF_DISCARD_PROCESS  (1u << 14) /* discarded: a process other than the runtime was left */
#define ZVIZ_RF_DISCARD_SOCKET   (1u << 15) /* discarded: a listening socket was left open */
#define ZVIZ_RF_DISCARD_RLIMIT   (1u << 16) /* discarded: the runtime changed its rlimits */
#define ZVIZ_RF_DISCARD_MEMORY   (1u << 17) /* discarded: memory in use after the reset above 90 % of the limit */
#define ZVIZ_RF_DISCARD_RESET    (1u << 18) /* discarded: the reset failed (unframed answer, /tmp not emptied, runtime unknown) */

/* One security decision, deduplicated: `count` calls with the same kind/action/nr/path. */
#define ZVIZ_AUDIT_SECCOMP 1u
#define ZVIZ_AUDIT_BROKER  2u
#define ZVIZ_AUDIT_ERRNO   1u /* seccomp: denied with an errno */
#define ZVIZ_AUDIT_KILL    2u /* seccomp: the process was killed */
#define ZVIZ_AUDIT_ALLOWED 1u /* broker: served */
#define ZVIZ_AUDIT_DENIED  2u /* broker: refused */
#define ZVIZ_MAX_AUDIT 64

struct zviz_audit {
	uint32_t kind;
	uint32_t action;
	int32_t nr;       /* syscall number, -1 if unknown */
	uint32_t count;
	char name[32];    /* syscall name */
	char path[224];   /* broker: the path asked for */
};

/* What one invocation did. All fields fixed-width so the layout is the same for koffi. */
struct zviz_result {
	uint32_t flags;
	int32_t exit_code;          /* valid unless ZVIZ_RF_SIGNALED */
	int32_t term_signal;        /* valid if ZVIZ_RF_SIGNALED */
	uint32_t audit_count;       /* records written to the caller's audit buffer */
	uint64_t setup_ns;          /* spawn request → sandbox ready */
	uint64_t duration_ns;       /* function released → its answer complete (the sandbox is torn down after) */
	uint64_t cpu_ns;            /* user + system of the whole tree */
	uint64_t memory_peak_bytes; /* whole tree */
	uint64_t oom_kills;
	uint64_t stdout_len;        /* bytes written to the caller's stdout buffer */
	uint64_t stderr_len;
	uint64_t audit_dropped;     /* records beyond ZVIZ_MAX_AUDIT */
	uint64_t reply_len;         /* bytes written to the caller's reply buffer (warm fd 4) */
	uint64_t trusted_cpu_ns;    /* CPU the supervisor spent on it, from GO on (a warm runtime: from its boot), notifications included (not in cpu_ns) */
};

/* Handle of one supervisor. Plain ints so it can live in a koffi struct. */
struct zviz_sandbox {
	int32_t pid;     /* supervisor pid, 0 once released */
	int32_t ctl_fd;  /* control socket, -1 once released */
	int32_t pidfd;   /* supervisor pidfd, -1 once released */
	int32_t state;   /* internal */
	uint64_t setup_ns;
};

ZVIZ_EXPORT int zviz_abi_version(void);

/* Writes a JSON object of kernel facts (landlock ABI, seccomp actions, user namespaces,
 * uname) into out (NUL-terminated). */
ZVIZ_EXPORT int zviz_probe(char *out, size_t out_cap, struct zviz_error *err);

/* Starts a supervisor (posix_spawn, so safe from a multi-threaded process), hands it the
 * encoded spec and waits until the sandbox is created and parked before running anything.
 * On failure nothing is left behind. */
ZVIZ_EXPORT int zviz_spawn(const char *supervisor_path, const uint8_t *spec, size_t spec_len,
			   struct zviz_sandbox *sb, struct zviz_error *err);

/* Called while zviz_run blocks, on the same thread, for each chunk of output when the GO
 * payload asks for streaming (stream 1 = stdout, 2 = stderr). A non-zero return asks the
 * supervisor to kill the sandbox (the consumer is gone). */
typedef int (*zviz_output_fn)(void *ctx, int32_t stream, const uint8_t *data, size_t len);

/* Releases the parked function, waits for its answer and fills result: the answer is
 * complete when the function's main process has exited and its stdout and stderr are
 * at EOF, or, with the GO payload's ANSWER record, when a warm function closed its fd 4.
 * The supervisor then tears the sandbox down on its own; zviz_release waits for that. `go` is an
 * optional payload (the invocation's limits, stdin, a warm function's work, streaming;
 * TLV as in native/src/internal.h). Copies at most *_cap bytes of stdout, stderr and
 * reply, and at most audit_cap audit records. on_output may be NULL. Blocks: call it
 * from a worker thread. */
ZVIZ_EXPORT int zviz_run(struct zviz_sandbox *sb, const uint8_t *go, size_t go_len, struct zviz_result *result,
			 uint8_t *stdout_buf, size_t stdout_cap, uint8_t *stderr_buf, size_t stderr_cap,
			 uint8_t *reply_buf, size_t reply_cap, struct zviz_audit *audit, size_t audit_cap,
			 zviz_output_fn on_output, void *ctx, struct zviz_error *err);

/* Asks the supervisor to kill the whole sandbox now. Safe to call from another thread while
 * zviz_run blocks; the run then returns with ZVIZ_RF_KILLED_BY_CALLER. */
ZVIZ_EXPORT int zviz_kill(const struct zviz_sandbox *sb, struct zviz_error *err);

/* Closes the handle and reaps the supervisor (killing it first if it is still running):
 * after zviz_run, this waits for the sandbox's teardown (kill, reap, cgroup removed). */
ZVIZ_EXPORT int zviz_release(struct zviz_sandbox *sb, struct zviz_error *err);

#ifdef __cplusplus
}
#endif
#endif
