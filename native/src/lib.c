/* lib.c — the exported ABI of libzviz.so, loaded into the (multi-threaded) server.
 *
 * Fork safety: the server has many threads, so this library never forks. It starts the
 * supervisor with posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK) + execve, no code of
 * ours runs in between) and talks to it over a socketpair. Everything that allocates,
 * parses or locks happens either here, before the spawn, or in the single-threaded
 * supervisor. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

enum { SB_SPAWNED = 1, SB_RUN = 2, SB_DONE = 3 };

ZVIZ_EXPORT int zviz_abi_version(void)
{
	return ZVIZ_ABI_VERSION;
}

/* Sanitizer settings are the only part of the server's environment the supervisor
 * sees; nothing of it ever reaches the sandbox (the spec carries the sandbox's env). */
static void build_env(char **out, size_t cap)
{
	size_t n = 0;
	for (char **e = environ; e && *e && n + 1 < cap; e++)
		if (strncmp(*e, "ASAN_OPTIONS=", 13) == 0 || strncmp(*e, "UBSAN_OPTIONS=", 14) == 0 ||
		    strncmp(*e, "LSAN_OPTIONS=", 13) == 0)
			out[n++] = *e;
	out[n] = NULL;
}

static void reap(pid_t pid, int pidfd, int grace_ms)
{
	if (pid <= 0)
		return;
	if (pidfd >= 0) {
		struct pollfd p = { .fd = pidfd, .events = POLLIN };
		int r;
		do
			r = poll(&p, 1, grace_ms);
		while (r < 0 && errno == EINTR);
		if (r == 0)
			syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
	} else {
		kill(pid, SIGKILL);
	}
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

static void close_handle(struct zviz_sandbox *sb, int grace_ms)
{
	if (sb->ctl_fd >= 0)
		close(sb->ctl_fd);
	reap(sb->pid, sb->pidfd, grace_ms);
	if (sb->pidfd >= 0)
		close(sb->pidfd);
	sb->ctl_fd = sb->pidfd = -1;
	sb->pid = 0;
	sb->state = SB_DONE;
}

ZVIZ_EXPORT int zviz_spawn(const char *supervisor_path, const uint8_t *spec, size_t spec_len, struct zviz_sandbox *sb,
			   struct zviz_error *err)
{
	zv_error_clear(err);
	memset(sb, 0, sizeof(*sb));
	sb->ctl_fd = sb->pidfd = -1;
	if (!supervisor_path || !spec)
		return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spawn: supervisor path and spec are required");
	if (spec_len > ZV_MAX_FRAME)
		return zv_fail(err, ZVIZ_E_TOO_LARGE, 0, "spawn: spec of %zu bytes exceeds %u", spec_len, ZV_MAX_FRAME);
	uint64_t t0 = zv_now_ns();

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return zv_fail(err, ZVIZ_E_SPAWN, errno, "socketpair");
	/* dup2 onto fd 3 clears CLOEXEC only if the fds differ; make sure they do. */
	if (sv[1] == 3) {
		int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
		if (moved < 0) {
			int e = errno;
			close(sv[0]);
			close(sv[1]);
			return zv_fail(err, ZVIZ_E_SPAWN, e, "move control fd");
		}
		close(sv[1]);
		sv[1] = moved;
	}

	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
	posix_spawnattr_init(&attr);
	/* Node ignores SIGPIPE and blocks some signals; the supervisor starts clean. Its
	 * own process group keeps a terminal's ^C from killing it before the server can
	 * shut it down in order. */
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
	char *envp[8];
	build_env(envp, 8);
	/* argv[0] is a name, not the path: a sandbox's /proc/1/cmdline (its init is a clone
	 * of the supervisor) must not tell the function where ZViz lives on the host. */
	char *argv[] = { (char *)"zviz-supervisor", NULL };
	pid_t pid;
	int rc = posix_spawn(&pid, supervisor_path, &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(sv[1]);
	if (rc != 0) {
		close(sv[0]);
		return zv_fail(err, ZVIZ_E_SPAWN, rc, "posix_spawn `%s`", supervisor_path);
	}
	sb->pid = pid;
	sb->ctl_fd = sv[0];
	sb->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	sb->state = SB_SPAWNED;

	if (zv_send_frame(sb->ctl_fd, ZV_FRAME_SPEC, spec, spec_len) < 0) {
		int e = errno;
		close_handle(sb, 0);
		return zv_fail(err, ZVIZ_E_PROTOCOL, e, "send spec of %zu bytes to supervisor", spec_len);
	}
	struct zv_frame f;
	int r = zv_recv_header(sb->ctl_fd, &f);
	if (r == 0 && f.type == ZV_FRAME_READY && f.len == 0) {
		sb->setup_ns = zv_now_ns() - t0;
		return 0;
	}
	if (r == 0 && f.type == ZV_FRAME_ERROR && f.len == sizeof(*err)) {
		struct zviz_error sup_err;
		if (zv_read_all(sb->ctl_fd, &sup_err, sizeof(sup_err)) == 0) {
			close_handle(sb, 5000);
			sup_err.msg[sizeof(sup_err.msg) - 1] = '\0';
			if (sup_err.code <= 0 || sup_err.code >= ZVIZ_E__COUNT)
				sup_err.code = ZVIZ_E_PROTOCOL;
			*err = sup_err;
			return -err->code;
		}
	}
	close_handle(sb, 5000);
	return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "supervisor exited or misbehaved during sandbox setup");
}

ZVIZ_EXPORT int zviz_run(struct zviz_sandbox *sb, const uint8_t *go, size_t go_len, struct zviz_result *result,
			 uint8_t *stdout_buf, size_t stdout_cap, uint8_t *stderr_buf, size_t stderr_cap,
			 uint8_t *reply_buf, size_t reply_cap, struct zviz_audit *audit, size_t audit_cap,
			 zviz_output_fn on_output, void *ctx, struct zviz_error *err)
{
	zv_error_clear(err);
	memset(result, 0, sizeof(*result));
	if (sb->state != SB_SPAWNED)
		return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "run: sandbox is not parked (state %d)", sb->state);
	sb->state = SB_RUN;
	if (go_len > ZV_MAX_FRAME)
		return zv_fail(err, ZVIZ_E_TOO_LARGE, 0, "run: GO payload of %zu bytes exceeds %u", go_len, ZV_MAX_FRAME);
	if (zv_send_frame(sb->ctl_fd, ZV_FRAME_GO, go_len ? go : NULL, go_len) < 0)
		return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "send GO to supervisor");

	struct zv_frame f;
	int r;
	bool consumer_gone = false;
	for (;;) {
		r = zv_recv_header(sb->ctl_fd, &f);
		if (r != 0)
			return zv_fail(err, ZVIZ_E_PROTOCOL, r < 0 ? errno : 0, "supervisor died before reporting a result");
		if (f.type != ZV_FRAME_OUTPUT)
			break;
		/* Streamed output: bounded chunks (the supervisor reads at most 64 KiB at once). */
		uint8_t chunk[65536 + 4];
		if (f.len < 4 || f.len > sizeof(chunk))
			return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "output frame of %u bytes", f.len);
		if (zv_read_all(sb->ctl_fd, chunk, f.len) != 0)
			return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "read output frame");
		uint32_t stream;
		memcpy(&stream, chunk, sizeof(stream));
		if (on_output && !consumer_gone && on_output(ctx, (int32_t)stream, chunk + 4, f.len - 4) != 0) {
			consumer_gone = true;
			struct zviz_error ignored;
			zviz_kill(sb, &ignored);
		}
	}
	if (f.type == ZV_FRAME_ERROR && f.len == sizeof(*err)) {
		if (zv_read_all(sb->ctl_fd, err, sizeof(*err)) != 0)
			return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "read error frame");
		err->msg[sizeof(err->msg) - 1] = '\0';
		if (err->code <= 0 || err->code >= ZVIZ_E__COUNT)
			err->code = ZVIZ_E_PROTOCOL;
		return -err->code;
	}
	if (f.type != ZV_FRAME_RESULT || f.len < sizeof(*result))
		return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "unexpected frame %u of %u bytes", f.type, f.len);
	if (zv_read_all(sb->ctl_fd, result, sizeof(*result)) != 0)
		return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "read result");
	uint64_t out_len = result->stdout_len, err_len = result->stderr_len, reply_len = result->reply_len;
	uint64_t audit_len = (uint64_t)result->audit_count * sizeof(struct zviz_audit);
	if (result->audit_count > ZVIZ_MAX_AUDIT || out_len > ZV_MAX_FRAME || err_len > ZV_MAX_FRAME ||
	    reply_len > ZV_MAX_FRAME || out_len + err_len + reply_len + audit_len != f.len - sizeof(*result))
		return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "result lengths do not match frame of %u bytes", f.len);
	/* Copy what fits, discard the rest (the supervisor already capped each stream). */
	struct {
		uint8_t *buf;
		size_t cap;
		uint64_t len;
		uint64_t *kept;
		uint32_t flag;
	} streams[3] = {
		{ stdout_buf, stdout_cap, out_len, &result->stdout_len, ZVIZ_RF_STDOUT_TRUNCATED },
		{ stderr_buf, stderr_cap, err_len, &result->stderr_len, ZVIZ_RF_STDERR_TRUNCATED },
		{ reply_buf, reply_cap, reply_len, &result->reply_len, 0 },
	};
	uint8_t scratch[4096];
	for (int i = 0; i < 3; i++) {
		if (!streams[i].buf)
			streams[i].cap = 0;
		uint64_t keep = streams[i].len < streams[i].cap ? streams[i].len : streams[i].cap;
		if (keep && zv_read_all(sb->ctl_fd, streams[i].buf, keep) != 0)
			return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "read output");
		for (uint64_t left = streams[i].len - keep; left > 0;) {
			size_t chunk = left < sizeof(scratch) ? (size_t)left : sizeof(scratch);
			if (zv_read_all(sb->ctl_fd, scratch, chunk) != 0)
				return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "read output");
			left -= chunk;
		}
		if (keep < streams[i].len)
			result->flags |= streams[i].flag;
		*streams[i].kept = keep;
	}
	uint32_t kept = 0;
	for (uint32_t i = 0; i < result->audit_count; i++) {
		struct zviz_audit rec;
		if (zv_read_all(sb->ctl_fd, &rec, sizeof(rec)) != 0)
			return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "read audit records");
		if (audit && kept < audit_cap) {
			rec.name[sizeof(rec.name) - 1] = '\0';
			rec.path[sizeof(rec.path) - 1] = '\0';
			audit[kept++] = rec;
		} else {
			result->audit_dropped++;
		}
	}
	result->audit_count = kept;
	result->setup_ns = sb->setup_ns;
	/* A reusable environment was reset and parked again: it takes the next GO. */
	if (result->flags & ZVIZ_RF_REUSABLE)
		sb->state = SB_SPAWNED;
	return 0;
}

ZVIZ_EXPORT int zviz_kill(const struct zviz_sandbox *sb, struct zviz_error *err)
{
	zv_error_clear(err);
	if (sb->ctl_fd < 0)
		return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "kill: sandbox already released");
	struct zv_frame f = { .magic = ZV_FRAME_MAGIC, .type = ZV_FRAME_KILL, .len = 0, .reserved = 0 };
	if (send(sb->ctl_fd, &f, sizeof(f), MSG_NOSIGNAL) != (ssize_t)sizeof(f))
		return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "send KILL to supervisor");
	return 0;
}

ZVIZ_EXPORT int zviz_release(struct zviz_sandbox *sb, struct zviz_error *err)
{
	zv_error_clear(err);
	if (sb->state == SB_DONE || sb->state == 0)
		return 0;
	/* Closing the control socket tells the supervisor to kill whatever is left, remove
	 * the cgroup and exit; give it time to do that before forcing it. */
	close_handle(sb, 5000);
	return 0;
}
