/* sup.h — struct sup, the state of one supervisor: what supervisor.c (protocol, sandbox
 * creation) fills in and loop.c (the event loop that runs a sandbox) works on. Its own
 * header, so that neither of the two files reaches into the other. */
#ifndef ZVIZ_SUP_H
#define ZVIZ_SUP_H

#include <stdbool.h>
#include <sys/resource.h>

#include "sandbox.h"

#define CTL_FD 3

/* A stream we read from the sandbox (stdout, stderr, the reply channel), capped. */
struct pipe_buf {
	int fd;
	uint8_t *data;
	size_t len, cap;
	bool truncated;
};

/* A stream we write into the sandbox (stdin, the control channel). */
struct feed {
	int fd;
	const uint8_t *data;
	size_t len, off;
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
	int timer_fd;
	bool warm;    /* the function was started before GO (pre-warmed) */
	bool booted;  /* warm: the runtime said it is ready, or ended trying */
	bool running; /* GO received: limits, timer and output caps are the invocation's */
	bool init_reaped, got_exit;
	int wait_status;
	struct rusage init_rusage;
	struct zviz_result res;
	uint64_t started_ns;
};

#endif
