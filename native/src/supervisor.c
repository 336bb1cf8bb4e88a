/* supervisor.c — zviz-supervisor: the trusted side of one sandbox.
 *
 * Started by libzviz with posix_spawn (never a fork of the multi-threaded server), it
 * reads the spec from its control socket (fd 3), creates the sandbox's cgroup and the
 * sandbox itself, reports READY, and on GO releases the function and runs a poll loop
 * over: the sandbox init's pidfd, its stdout/stderr pipes, the stdin pipe, the init's
 * message pipe, a timeout timerfd, the control socket, a pidfd of the server and the
 * sandbox's seccomp listener, whose notifications it answers itself (broker.c). It is
 * single-threaded by design: the child it clone()s may therefore allocate freely.
 *
 * Lifetime rules: the sandbox dies with the supervisor (PDEATHSIG in the child); the
 * supervisor kills the sandbox and exits when the server dies (server pidfd) or the
 * control socket closes. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loop.h"
#include "sup.h"

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

struct clone_args_v2 {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size,
		cgroup;
};

static int read_cap_last(void)
{
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	int v = 40;
	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = 40;
		fclose(f);
	}
	return v;
}

static void send_error(const struct zviz_error *err)
{
	zv_send_frame(CTL_FD, ZV_FRAME_ERROR, err, sizeof(*err));
}

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int read_spec(struct sup *s, struct zviz_error *err)
{
	struct zv_frame f;
	int r = zv_recv_header(CTL_FD, &f);
	if (r != 0 || f.type != ZV_FRAME_SPEC)
		return zv_fail(err, ZVIZ_E_PROTOCOL, r < 0 ? errno : 0, "read spec frame");
	s->spec_buf = malloc(f.len ? f.len : 1);
	if (!s->spec_buf)
		return zv_fail(err, ZVIZ_E_SYSTEM, ENOMEM, "allocate %u bytes for the spec", f.len);
	if (f.len && zv_read_all(CTL_FD, s->spec_buf, f.len) != 0)
		return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "read %u spec bytes", f.len);
	return zv_spec_parse(s->spec_buf, f.len, &s->spec, err);
}

static int make_pipe(int fds[2], struct zviz_error *err)
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "pipe");
	return 0;
}

/* Creates the sandbox and parks it. On success s->init_* are set. */
static int create_sandbox(struct sup *s, struct zviz_error *err)
{
	int sync_p[2], msg_p[2], in_p[2], out_p[2], err_p[2], ctl_p[2] = { -1, -1 }, reply_p[2] = { -1, -1 };
	int r;
	if ((r = make_pipe(sync_p, err)) < 0 || (r = make_pipe(msg_p, err)) < 0 || (r = make_pipe(in_p, err)) < 0 ||
	    (r = make_pipe(out_p, err)) < 0 || (r = make_pipe(err_p, err)) < 0)
		return r;
	/* A warm function gets two more fds: 3 to read its work from, 4 to answer on. */
	if (s->warm && ((r = make_pipe(ctl_p, err)) < 0 || (r = make_pipe(reply_p, err)) < 0))
		return r;

	if ((r = zv_cg_create(&s->cg, &s->spec, err)) < 0)
		return r;
	if ((r = zv_ll_prepare(&s->spec, &s->ll, err)) < 0)
		return r;
	if ((r = zv_sc_compile(&s->spec, &s->sc, err)) < 0 || (r = zv_broker_prepare(&s->broker, &s->spec, &s->sc, err)) < 0)
		return r;

	/* Image root: the mount is prepared here, on the trusted side, as host root (see
	 * mnt.c); the child only moves it into place. */
	uint32_t host_base = s->spec.uid_base + 2u * (uint32_t)getpid();
	int image_fd = -1;
	if ((r = zv_mnt_open_image(&s->spec, host_base, &image_fd, err)) < 0)
		return r;
	/* A job's workspace, likewise prepared here (idmapped to the function's host id). */
	int ws_fd = -1;
	if ((r = zv_mnt_open_workspace(&s->spec, host_base, &ws_fd, err)) < 0) {
		if (image_fd >= 0)
			close(image_fd);
		return r;
	}

	struct zv_child_ctx ctx = {
		.spec = &s->spec,
		.sync_rd = sync_p[0],
		.msg_wr = msg_p[1],
		.stdin_rd = in_p[0],
		.stdout_wr = out_p[1],
		.stderr_wr = err_p[1],
		.cap_last = read_cap_last(),
		.close_from = CTL_FD,
		.ll = &s->ll,
		.sc = &s->sc,
		.broker_sock = s->broker.sock_child,
		.ctl_rd = ctl_p[0],
		.reply_wr = reply_p[1],
		.image_fd = image_fd,
		.workspace_fd = ws_fd,
	};

	struct clone_args_v2 ca;
	memset(&ca, 0, sizeof(ca));
	int pidfd = -1;
	ca.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_PIDFD;
	if (s->spec.netns_path) {
		/* Egress: be born in the namespace ZViz made (see net.c). */
		if ((r = zv_net_join(s->spec.netns_path, err)) < 0)
			return r;
		ctx.joined_netns = true;
	} else {
		ca.flags |= CLONE_NEWNET;
	}
	ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
	ca.exit_signal = SIGCHLD;
	int cgfd = zv_cg_clone_fd(&s->cg);
	if (cgfd >= 0) {
		/* cgroup v2: the child is born inside its cgroup, no window outside it. */
		ca.flags |= CLONE_INTO_CGROUP;
		ca.cgroup = (uint64_t)cgfd;
	}
	/* With CLONE_NEWCGROUP the child's cgroup namespace root is the cgroup it is in at
	 * clone time. On v1 we attach after clone, so its root is the server's cgroup:
	 * it sees paths relative to that, never the host's hierarchy above it. */
	long pid = syscall(SYS_clone3, &ca, sizeof(ca));
	if (pid != 0 && image_fd >= 0)
		close(image_fd);
	if (pid != 0 && ws_fd >= 0)
		close(ws_fd);
	if (pid < 0)
		return zv_fail(err, ZVIZ_E_NAMESPACE, errno, "clone3 with new user, mount, pid, ipc, uts, net, cgroup namespaces");
	if (pid == 0)
		zv_sandbox_main(&ctx);

	s->init_pid = (pid_t)pid;
	s->init_pidfd = pidfd;
	if (s->broker.sock_child >= 0) {
		close(s->broker.sock_child);
		s->broker.sock_child = -1;
	}
	close(sync_p[0]);
	close(msg_p[1]);
	close(in_p[0]);
	close(out_p[1]);
	close(err_p[1]);
	s->sync_wr = sync_p[1];
	s->msg_rd = msg_p[0];
	s->in.fd = in_p[1];
	s->out.fd = out_p[0];
	s->err.fd = err_p[0];
	if (s->warm) {
		close(ctl_p[0]);
		close(reply_p[1]);
		s->ctl.fd = ctl_p[1];
		s->reply.fd = reply_p[0];
	}

	if ((r = zv_userns_write_maps(s->init_pid, host_base, err)) < 0)
		return r;
	if (cgfd < 0 && (r = zv_cg_attach(&s->cg, s->init_pid, err)) < 0)
		return r;
	if (write(s->sync_wr, "M", 1) != 1)
		return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "release sandbox init for setup");

	struct zv_child_msg m;
	int rr = zv_read_all(s->msg_rd, &m, sizeof(m));
	if (rr != 0)
		return zv_fail(err, ZVIZ_E_PROTOCOL, rr < 0 ? errno : 0, "sandbox init exited during setup");
	if (m.type == ZV_MSG_ERROR) {
		*err = m.err;
		err->msg[sizeof(err->msg) - 1] = '\0';
		return -err->code;
	}
	if (m.type != ZV_MSG_READY)
		return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "sandbox init sent message %d during setup", m.type);
	return 0;
}

/* Parked: wait for GO (with its payload) while watching the server and, unless the
 * function is warm, the init. A warm function may end while parked (it failed to load,
 * or its boot passed a limit): that is its result, collected by the loop after GO. A warm
 * runtime may still make filtered calls while parked (timers, its own housekeeping): they
 * are answered here; if answering fails, the parked sandbox ends here (broker.c). */
int zv_sup_wait_for_go(struct sup *s, struct zviz_error *err)
{
	for (;;) {
		struct pollfd pfd[4] = {
			{ .fd = CTL_FD, .events = POLLIN },
			{ .fd = s->server_pidfd, .events = POLLIN },
			/* A reusable environment's runtime must still be there when work arrives,
			 * once it has served: before, a runtime that ended (failed to load, killed
			 * for a limit while booting or parked) is its first invocation's result. */
			{ .fd = !s->warm || (s->reuse && s->re.invocations > 0) ? s->init_pidfd : -1, .events = POLLIN },
			{ .fd = zv_broker_pollfd(&s->broker), .events = POLLIN },
		};
		if (poll(pfd, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			return zv_fail(err, ZVIZ_E_SYSTEM, errno, "poll while parked");
		}
		if (pfd[1].revents)
			return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "server exited while the sandbox was parked");
		if (pfd[2].revents)
			return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "sandbox init exited while parked");
		if (pfd[3].revents) {
			zv_broker_serve(&s->broker, pfd[3].revents);
			/* Fail closed at once, not at the next work: the sandbox ends with us, as
			 * when its init ends while parked (the caller finds it gone and starts
			 * another). */
			if (s->broker.failed)
				return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "answering the sandbox's seccomp notifications failed while parked");
			/* A warm runtime's boot started its first invocation's trusted CPU. */
			zv_sup_check_trusted_cpu(s);
		}
		if (!pfd[0].revents)
			continue;
		struct zv_frame f;
		int r = zv_recv_header(CTL_FD, &f);
		if (r != 0 || f.type != ZV_FRAME_GO)
			return zv_fail(err, ZVIZ_E_PROTOCOL, r < 0 ? errno : 0, "expected GO while parked");
		if (f.len > 0) {
			s->go_buf = malloc(f.len);
			if (!s->go_buf)
				return zv_fail(err, ZVIZ_E_SYSTEM, ENOMEM, "allocate %u bytes for GO", f.len);
			if (zv_read_all(CTL_FD, s->go_buf, f.len) != 0)
				return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "read GO payload of %u bytes", f.len);
		}
		return zv_go_parse(s->go_buf, f.len, &s->spec, &s->ctl.data, &s->ctl.len, err);
	}
}

/* What GO may change: the invocation's own limits (narrowed or not), its stdin, and the
 * work for a warm runtime. Limits go to the cgroup now, before anything runs. */
int zv_sup_apply_go(struct sup *s, struct zviz_error *err)
{
	int r;
	/* A warm function's output before GO is kept for its first invocation, and its answer
	 * is the reply channel: neither is a log. */
	if (s->spec.log_bytes && s->warm)
		return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO log: a warm sandbox's output is not a log");
	if (s->cg.n > 0 && (r = zv_cg_apply_limits(&s->cg, &s->spec.limits, err)) < 0)
		return r;
	if ((r = zv_sup_alloc_buffers(s, err)) < 0)
		return r;
	s->in.data = s->spec.stdin_data;
	s->in.len = s->spec.stdin_len;
	if (s->in.len == 0 && s->in.fd >= 0) {
		close(s->in.fd);
		s->in.fd = -1;
	}
	if (s->warm && s->ctl.len == 0 && s->ctl.fd >= 0) {
		close(s->ctl.fd);
		s->ctl.fd = -1;
	}
	return zv_sup_arm_timer(s, s->spec.limits.timeout_ms, err);
}

void zv_sup_send_result(struct sup *s)
{
	struct iovec parts[] = {
		{ .iov_base = &s->res, .iov_len = sizeof(s->res) },
		{ .iov_base = s->out.data, .iov_len = s->out.len },
		{ .iov_base = s->err.data, .iov_len = s->err.len },
		{ .iov_base = s->reply.data, .iov_len = s->reply.len },
		{ .iov_base = s->audit, .iov_len = s->naudit * sizeof(s->audit[0]) },
	};
	zv_send_framev(CTL_FD, ZV_FRAME_RESULT, parts, 5);
}

/* Warm: start the runtime now and wait until it says it has loaded (or ends trying).
 *
 * The boot is the function's own code (its module's top level runs here), so it is its
 * first invocation's: bounded by that invocation's limits — the cgroup (cpus, memory, pids)
 * from creation, timeoutMs by the timer armed here, the trusted CPU budget from here on —
 * and charged to it: the cgroup's CPU from creation, the supervisor's CPU clock from here
 * (loop.c, reuse.c). A boot that passes a limit is killed and, like a runtime that failed
 * to load, becomes that invocation's result, reported and charged after GO: were it an
 * error instead, the CPU it burnt would be charged to nobody, every time it is tried. */
static int boot(struct sup *s, struct zviz_error *err)
{
	int r;
	if ((r = zv_sup_alloc_buffers(s, err)) < 0 || (r = zv_sup_arm_timer(s, s->spec.limits.timeout_ms, err)) < 0 ||
	    (r = zv_sup_start_trusted_accounting(s, err)) < 0)
		return r;
	if (write(s->sync_wr, "G", 1) != 1)
		return zv_fail(err, ZVIZ_E_PROTOCOL, errno, "start the warm runtime");
	close(s->sync_wr);
	s->sync_wr = -1;
	if (!zv_sup_loop(s, true))
		return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "server exited while the runtime was starting");
	/* Parked: the budget is checked as notifications are answered (zv_sup_wait_for_go). */
	zv_sup_pause_trusted_budget(s);
	/* Disarm: the invocation's own timeout starts at GO. */
	return zv_sup_arm_timer(s, 0, err);
}

/* `zviz-supervisor --export-bpf < spec`: compile the spec's filter and write the BPF
 * program (prefix included) to stdout, so tests can run the policy on synthetic
 * seccomp_data without root and without loading it. */
static int export_bpf(void)
{
	static uint8_t buf[ZV_MAX_FRAME / 16];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(0, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	struct zviz_error err;
	struct zv_spec spec;
	struct zv_seccomp sc;
	zv_error_clear(&err);
	if (zv_spec_parse(buf, len, &spec, &err) < 0 || zv_sc_compile(&spec, &sc, &err) < 0) {
		fprintf(stderr, "zviz-supervisor: %s\n", err.msg);
		return 1;
	}
	int rc = sc.prog && zv_write_all(1, sc.prog, (size_t)sc.len * 8u) == 0 ? 0 : 1;
	zv_sc_free(&sc);
	zv_spec_free(&spec);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--export-bpf") == 0)
		return export_bpf();
	if (argc == 3 && strcmp(argv[1], "--sanitize-image") == 0) {
		/* Store side (worker-pool/images/): see image.c. */
		struct zviz_error e;
		zv_error_clear(&e);
		if (zv_image_sanitize(argv[2], &e) < 0) {
			fprintf(stderr, "zviz-supervisor: %s\n", e.msg);
			return 1;
		}
		return 0;
	}
	struct zviz_error err;
	zv_error_clear(&err);
	struct sup s;
	memset(&s, 0, sizeof(s));
	s.init_pidfd = s.server_pidfd = s.sync_wr = s.msg_rd = s.timer_fd = s.budget_fd = -1;
	s.in.fd = s.ctl.fd = s.out.fd = s.err.fd = s.reply.fd = -1;
	s.ll.ruleset_fd = -1;
	s.kmsg_fd = -1;
	s.re.peak_fd = -1;
	s.re.runtime_pidfd = -1;
	s.broker.sock = s.broker.sock_child = s.broker.listener = -1;
	for (size_t i = 0; i < ZV_MAX_BROKER_FILES; i++)
		s.broker.copies[i] = -1;
	int rc = 1;

	/* The sandbox can close every pipe we write into (its stdin, a warm function's fd
	 * 3) whenever it likes: a write to it must fail with EPIPE, never kill the trusted
	 * side with SIGPIPE (the result, and the CPU it measured, would be lost). The function
	 * gets the default back before its execve (sandbox.c), since an ignored disposition
	 * would survive the exec. */
	signal(SIGPIPE, SIG_IGN);

	/* Only the control socket is ours to keep. */
	syscall(SYS_close_range, CTL_FD + 1, ~0U, 0);
	if (fcntl(CTL_FD, F_GETFD) < 0)
		return 2; /* not started by libzviz */
	fcntl(CTL_FD, F_SETFD, FD_CLOEXEC);
	/* Never block for long on a caller that stopped reading (streamed output). */
	struct timeval snd = { .tv_sec = 10, .tv_usec = 0 };
	setsockopt(CTL_FD, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));

	/* Watch the server: if it dies, so does this sandbox. getppid() after pidfd_open
	 * closes the race where it died first and we were reparented. */
	pid_t server = getppid();
	s.server_pidfd = pidfd_open_(server);
	if (s.server_pidfd < 0 || getppid() != server)
		return 3;

	/* The spec says whether the sandbox is warm; a warm one's runtime boots before READY. */
	int made = read_spec(&s, &err);
	if (made >= 0) {
		s.warm = (s.spec.flags & ZV_SF_WARM) != 0;
		s.reuse = (s.spec.flags & ZV_SF_REUSE) != 0;
		made = create_sandbox(&s, &err);
	}
	if (made >= 0 && s.warm)
		made = boot(&s, &err);
	if (made < 0) {
		send_error(&err);
		goto out;
	}
	if (zv_send_frame(CTL_FD, ZV_FRAME_READY, NULL, 0) < 0)
		goto out;
	if (s.reuse) {
		/* A reusable environment serves invocations until one ends it (reuse.c). */
		rc = zv_reuse_serve(&s, &err) < 0 ? 1 : 0;
		goto out;
	}
	if (zv_sup_wait_for_go(&s, &err) < 0) {
		/* A malformed GO is answered; a caller that went away is not. */
		if (err.code != ZVIZ_E_PROTOCOL)
			send_error(&err);
		goto out;
	}
	if (zv_sup_apply_go(&s, &err) < 0) {
		send_error(&err);
		goto out;
	}
	if (zv_sup_start_trusted_accounting(&s, &err) < 0) {
		send_error(&err);
		goto out;
	}
	s.kmsg_fd = zv_kmsg_open();
	s.started_ns = zv_now_ns();
	s.running = true;
	if (!s.warm) {
		if (write(s.sync_wr, "G", 1) != 1) {
			zv_fail(&err, ZVIZ_E_PROTOCOL, errno, "release the function");
			send_error(&err);
			goto out;
		}
		close(s.sync_wr);
		s.sync_wr = -1;
	}
	bool reply = zv_sup_loop(&s, false);
	zv_sup_finish_result(&s);
	if (reply)
		zv_sup_send_result(&s);
	rc = 0;
out:
	zv_sup_kill_sandbox(&s);
	if (s.init_pidfd >= 0 && !s.init_reaped) {
		siginfo_t si;
		waitid((idtype_t)P_PIDFD, (id_t)s.init_pidfd, &si, WEXITED);
	}
	zv_broker_finish(&s.broker);
	zv_sc_free(&s.sc);
	if (zv_cg_destroy(&s.cg, &err) < 0)
		rc = 4;
	return rc;
}
