/* output.c — the sandbox's stdout and stderr as the supervisor reads them: kept (an
 * invocation's answer carries them, so each is capped at outputBytes), or a log (a CI
 * job's): forwarded to the caller as it comes and forgotten, bounded only in volume.
 *
 * Both ends stay bounded. A flood of output is not allowed to burn the host's CPU until the
 * timeout: passing the cap (or the log's volume limit) kills the sandbox. A caller that
 * stops reading is not allowed to grow our memory: forwarding blocks on the control socket
 * (SO_SNDTIMEO, supervisor.c), which stops our reading, which fills the pipe, which blocks
 * the function; a send that times out ends the invocation (send_failed, loop.c). */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"
#include "output.h"

/* Reads per drain call before returning to the loop: 1 MiB of a log. */
#define LOG_READS_PER_DRAIN 16

static void close_pipe(struct pipe_buf *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

static void send_chunks(struct zv_output *o, int stream, const uint8_t *data, size_t len)
{
	uint32_t id = (uint32_t)stream;
	for (size_t off = 0; off < len && !o->send_failed;) {
		size_t n = len - off < ZV_LOG_CHUNK ? len - off : ZV_LOG_CHUNK;
		struct iovec parts[] = {
			{ .iov_base = &id, .iov_len = sizeof(id) },
			{ .iov_base = (void *)(data + off), .iov_len = n },
		};
		if (zv_send_framev(o->ctl_fd, ZV_FRAME_OUTPUT, parts, 2) < 0)
			o->send_failed = true;
		off += n;
	}
}

static void forward(struct zv_output *o, int stream, const uint8_t *data, size_t len)
{
	if (o->forward && !o->send_failed && len > 0)
		send_chunks(o, stream, data, len);
}

/* A log: each read goes out and the buffer is reused; nothing stays. */
static void drain_log(struct zv_output *o, int stream, struct pipe_buf *p)
{
	for (int i = 0; i < LOG_READS_PER_DRAIN; i++) {
		ssize_t n = read(p->fd, p->data, p->cap);
		if (n > 0) {
			uint64_t room = o->log_limit - o->total;
			size_t take = (uint64_t)n > room ? (size_t)room : (size_t)n;
			o->total += take;
			forward(o, stream, p->data, take);
			if (take < (size_t)n) {
				/* Past the volume limit: the log ends exactly at it; the loop kills. */
				p->truncated = true;
				close_pipe(p);
				return;
			}
			continue;
		}
		if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
			close_pipe(p);
			return;
		}
		if (errno == EAGAIN)
			return;
	}
}

void zv_out_keep(struct pipe_buf *p)
{
	uint8_t scratch[65536];
	for (;;) {
		size_t room = p->cap - p->len;
		uint8_t *dst = room ? p->data + p->len : scratch;
		size_t want = room ? room : sizeof(scratch);
		ssize_t n = read(p->fd, dst, want);
		if (n > 0) {
			if (room) {
				p->len += (size_t)n;
				continue;
			}
			/* Over the cap: keep what fits and report it; the loop kills the sandbox. */
			p->truncated = true;
			close_pipe(p);
			return;
		}
		if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
			close_pipe(p);
			return;
		}
		if (errno == EAGAIN)
			return;
	}
}

void zv_out_drain(struct zv_output *o, int stream, struct pipe_buf *p)
{
	if (p->fd < 0)
		return;
	if (o->log_limit) {
		drain_log(o, stream, p);
		return;
	}
	size_t before = p->len;
	zv_out_keep(p);
	forward(o, stream, p->data + before, p->len - before);
}

void zv_out_note(struct zv_output *o, int stream, struct pipe_buf *p, const void *data, size_t len)
{
	if (o->log_limit) {
		forward(o, stream, data, len);
		return;
	}
	if (len <= p->cap - p->len) {
		memcpy(p->data + p->len, data, len);
		p->len += len;
	}
}
