/* sup.h — struct sup, the state of one supervisor: what supervisor.c (protocol, sandbox
 * creation) fills in and loop.c (the event loop that runs a sandbox) works on. Its own
 * header, so that neither of the two files reaches into the other. */
#ifndef ZVIZ_SUP_H
#define ZVIZ_SUP_H

#include <stdbool.h>
#include <sys/resource.h>

#include "output.h"
#include "sandbox.h"

#define CTL_FD 3

/* The trusted side's CPU budget for one invocation: what the supervisor (which answers the
 * sandbox's seccomp notifications too) may spend on its behalf — from GO on, or for a warm
 * runtime from the start of its boot, which is its first invocation's — is at most
 * 1/ZV_TRUSTED_CPU_SHARE of the CPU the invocation itself may use (timeoutMs × cpus), and
 * never less than ZV_TRUSTED_CPU_MIN_NS. Checked every ZV_TRUSTED_CPU_TICK_MS, during a
 * warm runtime's boot too; passing it kills the sandbox. */
#define ZV_TRUSTED_CPU_SHARE 10u
#define ZV_TRUSTED_CPU_MIN_NS (100ull * 1000000ull)
#define ZV_TRUSTED_CPU_TICK_MS 50

/* A stream we write into the sandbox (stdin, the control channel). */
struct feed {
	int fd;
	const uint8_t *data;
	size_t len, off;
	bool keep; /* stay open once written (a reusable environment's fd 3 carries many) */
};

/* A reusable environment's state across its invocations (reuse.c). */
struct zv_reuse {
	pid_t runtime_pid;     /* the runtime's main process (host pid), the one process a reset keeps */
	int runtime_pidfd;     /* the same process, held: /proc/<pid> reads are trusted only while it lives */
	char limits[4096];     /* its /proc/<pid>/limits when it booted: a change discards */
	size_t limits_len;
	uint8_t *frame;        /* the invocation's control message, length-prefixed */
	int peak_fd;           /* v2 memory.peak, reset through this fd per invocation */
	bool peak_resettable;  /* the kernel resets the peak per invocation */
	uint64_t cpu_charged;  /* the cgroup's CPU charged to the invocations so far: 0 before the
				* first, which is therefore charged the boot too (the cgroup is the
				* sandbox's own from its creation) */
	uint32_t invocations;  /* served so far */
};

struct sup {
	struct zv_spec spec;
	uint8_t *spec_buf;
	uint8_t *go_buf; /* payload of the GO frame: the data below may point into it */
	struct zv_cgroup cg;
	struct zv_landlock ll;
	struct zv_seccomp sc;
	struct zv_broker broker;
	struct zviz_audit audit[ZVIZ_MAX_AUDIT];
	uint32_t naudit;
	int kmsg_fd;
	pid_t init_pid;
	int init_pidfd;
	int server_pidfd;
	int sync_wr;
	int msg_rd;
	struct feed in, ctl;
	struct pipe_buf out, err, reply;
	struct zv_output output; /* how out and err are handled: kept, or a log (output.h) */
	int timer_fd;
	int budget_fd;             /* periodic: check the trusted side's CPU against its budget */
	uint64_t trusted_budget_ns;
	uint64_t self_cpu_from;    /* the supervisor's own CPU clock where the invocation's trusted CPU starts */
	bool charging;             /* self_cpu_from is set: a warm runtime's boot started the first invocation's */
	bool warm;    /* the function was started before GO (pre-warmed) */
	bool booted;  /* warm: the runtime said it is ready, or ended trying */
	bool running; /* GO received: limits, timer and output caps are the invocation's */
	bool killed;  /* we ended the sandbox (timeout, a cap, the caller, failed notification handling, the server) */
	bool reuse;    /* REUSE spec flag: serve invocations one at a time (reuse.c) */
	bool answered; /* reuse: the runtime's framed answer is complete; the invocation is over */
	struct zv_reuse re;
	bool init_reaped, got_exit;
	int wait_status;
	struct rusage init_rusage;
	struct zviz_result res;
	uint64_t started_ns;
};

#endif
