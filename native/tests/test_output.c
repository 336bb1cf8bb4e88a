/* test_output.c — the supervisor's handling of stdout and stderr (output.c), with real pipes
 * and a real control socket, and no sandbox (no root needed):
 *
 *   writer (a child) ── pipe ──► zv_out_drain in this process ── socketpair ──► reader (a
 *   child): reads the OUTPUT frames, checks every byte against the writer's pattern, and
 *   reports how many it got
 *
 * A log (a CI job's) is forwarded and forgotten: 64 MiB pass through one 64 KiB buffer
 * that never grows or holds anything, and the reader gets every byte in order. Past its
 * volume limit the log ends exactly at the limit and the stream is marked truncated (the
 * loop kills the sandbox: OUTPUT_LIMIT). A reader that stops reading makes a send time out
 * (send_failed: the loop kills the sandbox, KILLED_BY_CALLER) and nothing more is sent.
 * Kept output (an invocation's) is unchanged: kept up to the cap, forwarded as kept. The GO
 * record that asks for a log is parsed strictly. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "output.h"

#define MiB (1024ull * 1024ull)

#include "check.h"

/* Byte i of the writer's output. */
static uint8_t pattern(uint64_t i)
{
	return (uint8_t)(i * 131u + (i >> 16));
}

/* Writes `total` bytes of the pattern in odd-sized writes, then exits. */
static pid_t start_writer(int wr, int rd, uint64_t total)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	close(rd); /* the harness's end: closing it must end our writes (EPIPE) */
	signal(SIGPIPE, SIG_DFL);
	static uint8_t buf[100003];
	for (uint64_t off = 0; off < total;) {
		size_t n = total - off < sizeof(buf) ? (size_t)(total - off) : sizeof(buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(off + i);
		ssize_t w = write(wr, buf, n);
		if (w < 0)
			_exit(errno == EPIPE ? 0 : 3);
		off += (uint64_t)w;
	}
	_exit(0);
}

/* Reads OUTPUT frames of stream 1 until EOF; writes the byte count (or ~0 on a wrong byte
 * or frame) to `report`. With stall_ms, reads nothing for that long first. */
static pid_t start_reader(int sock, int report, int stall_ms, const int *others, int nothers)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	for (int i = 0; i < nothers; i++)
		close(others[i]); /* the harness's ends: the socket must reach EOF when it closes its own */
	if (stall_ms)
		poll(NULL, 0, stall_ms);
	uint64_t got = 0;
	static uint8_t chunk[ZV_LOG_CHUNK + 4];
	for (;;) {
		struct zv_frame f;
		int r = zv_recv_header(sock, &f);
		if (r == 1)
			break;
		if (r != 0 || f.type != ZV_FRAME_OUTPUT || f.len < 4 || f.len > sizeof(chunk) ||
		    zv_read_all(sock, chunk, f.len) != 0 || chunk[0] != 1) {
			got = ~0ull;
			break;
		}
		for (uint32_t i = 4; i < f.len; i++, got++)
			if (chunk[i] != pattern(got)) {
				got = ~0ull;
				goto out;
			}
	}
out:
	if (write(report, &got, sizeof(got)) != sizeof(got))
		_exit(3);
	_exit(0);
}

struct run {
	uint64_t received;  /* what the reader got (~0: a wrong byte or frame) */
	uint64_t total;     /* zv_output.total at the end */
	bool truncated;
	bool send_failed;
	bool buffer_moved;  /* the buffer was reallocated or held something after a drain */
};

/* Streams `written` bytes from a writer through zv_out_drain (stream 1) to a reader. */
static struct run pump(uint64_t written, uint64_t log_limit, size_t cap, int stall_ms, int sndtimeo_ms)
{
	/* Each child is forked before the other's fds exist: an inherited write end would keep
	 * the pipe (or the socket) from ever reaching EOF. */
	int p[2], s[2], rep[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		abort();
	pid_t writer = start_writer(p[1], p[0], written);
	close(p[1]);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) < 0 || pipe2(rep, O_CLOEXEC) < 0)
		abort();
	if (sndtimeo_ms) {
		struct timeval tv = { .tv_sec = sndtimeo_ms / 1000, .tv_usec = (sndtimeo_ms % 1000) * 1000 };
		int small = 64 * 1024;
		setsockopt(s[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(s[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	}
	int others[] = { p[0], s[0], rep[0] };
	pid_t reader = start_reader(s[1], rep[1], stall_ms, others, 3);
	close(s[1]);
	close(rep[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);

	struct pipe_buf pb = { .fd = p[0], .data = malloc(cap + 1), .cap = cap };
	uint8_t *data = pb.data;
	struct zv_output o = { .ctl_fd = s[0], .forward = true, .log_limit = log_limit };
	struct run r = { 0 };
	while (pb.fd >= 0) {
		struct pollfd pfd = { .fd = pb.fd, .events = POLLIN };
		poll(&pfd, 1, -1);
		zv_out_drain(&o, 1, &pb);
		if (log_limit && (pb.data != data || pb.len != 0 || pb.cap != cap))
			r.buffer_moved = true;
	}
	close(s[0]); /* the reader's EOF */
	if (read(rep[0], &r.received, sizeof(r.received)) != sizeof(r.received))
		r.received = ~0ull;
	close(rep[0]);
	waitpid(writer, NULL, 0);
	waitpid(reader, NULL, 0);
	r.total = o.total;
	r.truncated = pb.truncated;
	r.send_failed = o.send_failed;
	if (!log_limit)
		r.total = pb.len;
	free(pb.data);
	return r;
}

static void test_go_log(void)
{
	struct {
		const char *name;
		uint8_t rec[16];
		size_t len;
		int rc;
		uint64_t log_bytes;
	} cases[] = {
		{ "GO log of 5 GiB", { 6, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x40, 1, 0, 0, 0 }, 16, 0, 5ull << 30 },
		{ "GO log of 0 bytes refused", { 6, 0, 0, 0, 8, 0, 0, 0, 0 }, 16, -ZVIZ_E_INVALID_SPEC, 0 },
		{ "GO log of 4 bytes refused", { 6, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0 }, 12, -ZVIZ_E_INVALID_SPEC, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct zv_spec spec;
		memset(&spec, 0, sizeof(spec));
		const uint8_t *control;
		size_t control_len;
		struct zviz_error err;
		zv_error_clear(&err);
		int rc = zv_go_parse(cases[i].rec, cases[i].len, &spec, &control, &control_len, &err);
		CHECK(rc == cases[i].rc && spec.log_bytes == cases[i].log_bytes && spec.stream == (rc == 0),
		      "%s (rc %d, log_bytes %llu, `%s`)", cases[i].name, rc, (unsigned long long)spec.log_bytes, err.msg);
	}
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	struct run r = pump(64 * MiB, 1024 * MiB, ZV_LOG_CHUNK, 0, 0);
	CHECK(r.received == 64 * MiB && r.total == 64 * MiB && !r.truncated && !r.send_failed,
	      "a log of 64 MiB is forwarded whole and in order (received %llu, total %llu, truncated %d)",
	      (unsigned long long)r.received, (unsigned long long)r.total, r.truncated);
	CHECK(!r.buffer_moved, "a log keeps nothing: its one %u-byte buffer never grows or holds a byte", ZV_LOG_CHUNK);

	uint64_t limit = 3 * MiB + 12345;
	r = pump(16 * MiB, limit, ZV_LOG_CHUNK, 0, 0);
	CHECK(r.truncated && r.total == limit && r.received == limit && !r.send_failed,
	      "a log past its volume limit ends exactly at it, truncated (received %llu of limit %llu)",
	      (unsigned long long)r.received, (unsigned long long)limit);

	r = pump(64 * MiB, 1024 * MiB, ZV_LOG_CHUNK, 3000, 300);
	CHECK(r.send_failed && r.received != 64 * MiB, /* a frame cut by the timeout reads as ~0 */
	      "a reader that stops reading makes a log's send time out (send_failed %d, received %llu)", r.send_failed,
	      (unsigned long long)r.received);

	r = pump(5000, 0, 1000, 0, 0);
	CHECK(r.truncated && r.total == 1000 && r.received == 1000,
	      "kept output stops at its cap and forwards what it kept (kept %llu, received %llu)",
	      (unsigned long long)r.total, (unsigned long long)r.received);

	r = pump(800, 0, 1000, 0, 0);
	CHECK(!r.truncated && r.total == 800 && r.received == 800, "kept output under its cap is kept and forwarded whole");

	test_go_log();

	printf("%s\n", failures ? "FAILED" : "all passed");
	return failures ? 1 : 0;
}
