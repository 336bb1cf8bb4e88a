/* output.h — what the supervisor does with the sandbox's stdout and stderr (output.c). */
#ifndef ZVIZ_OUTPUT_H
#define ZVIZ_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A log's buffer per stream: one read, forwarded as one OUTPUT frame (the library's
 * chunk size), then forgotten. */
#define ZV_LOG_CHUNK 65536u

/* A stream we read from the sandbox (stdout, stderr, the reply channel), capped. */
struct pipe_buf {
	int fd;
	uint8_t *data;
	size_t len, cap;
	bool truncated; /* past its cap (kept output) or the log's volume limit: the sandbox is killed */
};

/* How stdout and stderr are handled. Kept (log_limit 0): what is read is kept up to each
 * buffer's cap, and forwarded too while `forward`. A log (GO's LOG record, a CI job's):
 * every read is forwarded and forgotten, so the buffers stay ZV_LOG_CHUNK however long the
 * job prints, and stdout and stderr together may pass log_limit bytes, no more. */
struct zv_output {
	int ctl_fd;         /* where OUTPUT frames go */
	bool forward;       /* streaming, and the invocation is running */
	uint64_t log_limit; /* 0: keep; else a log of at most this many bytes */
	uint64_t total;     /* a log: bytes forwarded so far, both streams */
	bool send_failed;   /* a send timed out or failed: the caller stopped reading, or is gone */
};

/* Reads what p's fd holds now (a bounded amount per call, so one flooding stream cannot
 * keep the loop from its timer and control socket). Sets p->truncated past a bound and
 * closes p's fd then, at EOF, or on an error. Stream 1 is stdout, 2 stderr. */
void zv_out_drain(struct zv_output *o, int stream, struct pipe_buf *p);
/* Reads what p's fd holds now and keeps it up to p's cap, forwarding nothing (the reply
 * channel of a warm function). */
void zv_out_keep(struct pipe_buf *p);
/* Text of the supervisor's own on a stream (an execve failure on stderr): kept if it
 * fits, or for a log forwarded. */
void zv_out_note(struct zv_output *o, int stream, struct pipe_buf *p, const void *data, size_t len);

#endif
