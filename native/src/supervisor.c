/* supervisor.c — zviz-supervisor: the trusted side of one sandbox.
 *
 * Started by libzviz with posix_spawn (never a fork of the multi-threaded server), it
 * reads the spec from its control socket (fd 3), creates the sandbox's cgroup and the
 * sandbox itself, reports READY, and on GO releases the function and runs a poll loop
 * over: the sandbox init's pidfd, its stdout/stderr pipes, the stdin pipe, the init's
 * message pipe, a timeout timerfd, the control socket and a pidfd of the server. It is
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
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

#define CTL_FD 3

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

struct pipe_buf {
	int fd;
	uint8_t *data;
	size_t len, cap;
	bool truncated;
};

struct sup {
	struct zv_spec spec;
	uint8_t *spec_buf;
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
	int stdin_wr;
	size_t stdin_off;
	struct pipe_buf out, err;
	int timer_fd;
	bool init_reaped, got_exit;
	int wait_status;
	struct rusage init_rusage;
	struct zviz_result res;
	uint64_t started_ns;
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

static void kill_sandbox(struct sup *s)
{
	/* The cgroup first: it also reaches processes that left the init's tree (there
	 * should be none; the pid namespace already confines them). Then init: when pid
	 * 1 of a pid namespace dies, the kernel SIGKILLs everything else in it. */
	zv_cg_kill(&s->cg);
	if (s->init_pidfd >= 0 && !s->init_reaped)
		syscall(SYS_pidfd_send_signal, s->init_pidfd, SIGKILL, NULL, 0);
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
	int sync_p[2], msg_p[2], in_p[2], out_p[2], err_p[2];
	int r;
	if ((r = make_pipe(sync_p, err)) < 0 || (r = make_pipe(msg_p, err)) < 0 || (r = make_pipe(in_p, err)) < 0 ||
	    (r = make_pipe(out_p, err)) < 0 || (r = make_pipe(err_p, err)) < 0)
		return r;

	if ((r = zv_cg_create(&s->cg, &s->spec, err)) < 0)
		return r;
	if ((r = zv_ll_prepare(&s->spec, &s->ll, err)) < 0)
		return r;
	if ((r = zv_sc_compile(&s->spec, &s->sc, err)) < 0 || (r = zv_broker_prepare(&s->broker, &s->sc, err)) < 0)
		return r;

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
	s->stdin_wr = in_p[1];
	s->out.fd = out_p[0];
	s->err.fd = err_p[0];

	uint32_t host_base = s->spec.uid_base + 2u * (uint32_t)getpid();
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
	/* The broker exists before anything is filtered: a notification never waits for it. */
	return zv_broker_spawn(&s->broker, &s->spec, err);
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void drain(struct pipe_buf *p)
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
			/* Over the cap: keep what fits and report it. The caller kills the sandbox
			 * rather than let a flood burn CPU (ours and the host's) until timeout. */
			p->truncated = true;
			close(p->fd);
			p->fd = -1;
			return;
		}
		if (n == 0) {
			close(p->fd);
			p->fd = -1;
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			close(p->fd);
			p->fd = -1;
		}
		return;
	}
}

static void feed_stdin(struct sup *s)
{
	while (s->stdin_off < s->spec.stdin_len) {
		ssize_t n = write(s->stdin_wr, s->spec.stdin_data + s->stdin_off, s->spec.stdin_len - s->stdin_off);
		if (n > 0) {
			s->stdin_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		break; /* EPIPE: the function closed stdin; fine */
	}
	close(s->stdin_wr);
	s->stdin_wr = -1;
}

static void read_child_msg(struct sup *s)
{
	struct zv_child_msg m;
	ssize_t n = read(s->msg_rd, &m, sizeof(m));
	if (n == (ssize_t)sizeof(m)) {
		if (m.type == ZV_MSG_EXIT) {
			s->got_exit = true;
			s->wait_status = m.wait_status;
		} else if (m.type == ZV_MSG_ERROR) {
			/* execve failed: report it on stderr of the result, as a shell would. */
			m.err.msg[sizeof(m.err.msg) - 1] = '\0';
			size_t l = strnlen(m.err.msg, sizeof(m.err.msg));
			size_t room = s->err.cap - s->err.len;
			if (l + 1 <= room) {
				memcpy(s->err.data + s->err.len, m.err.msg, l);
				s->err.data[s->err.len + l] = '\n';
				s->err.len += l + 1;
			}
			s->got_exit = true;
			s->wait_status = 127 << 8;
		}
		return;
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		close(s->msg_rd);
		s->msg_rd = -1;
	}
}

static void reap_init(struct sup *s)
{
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid((idtype_t)P_PIDFD, (id_t)s->init_pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
		return;
	s->init_reaped = true;
	getrusage(RUSAGE_CHILDREN, &s->init_rusage);
	if (!s->got_exit) {
		/* init died before reporting: it was killed (timeout, OOM, caller). The
		 * function's main process is gone with it; report the signal init got. */
		s->wait_status = si.si_code == CLD_EXITED ? (si.si_status & 0xff) << 8 : (si.si_status & 0x7f);
		s->got_exit = true;
	}
}

static int arm_timer(struct sup *s, struct zviz_error *err)
{
	s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (s->timer_fd < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "timerfd_create");
	struct itimerspec its;
	memset(&its, 0, sizeof(its));
	its.it_value.tv_sec = (time_t)(s->spec.limits.timeout_ms / 1000);
	its.it_value.tv_nsec = (long)(s->spec.limits.timeout_ms % 1000) * 1000000L;
	if (timerfd_settime(s->timer_fd, 0, &its, NULL) < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "arm timeout of %llu ms",
			       (unsigned long long)s->spec.limits.timeout_ms);
	return 0;
}

enum { P_CTL, P_SERVER, P_INIT, P_OUT, P_ERR, P_IN, P_MSG, P_TIMER, P_BROKER, P_COUNT };

/* Returns false if the server is gone (no result to send). */
static bool run_loop(struct sup *s)
{
	bool server_alive = true, ctl_open = true;
	set_nonblock(s->out.fd);
	set_nonblock(s->err.fd);
	set_nonblock(s->msg_rd);
	if (s->stdin_wr >= 0)
		set_nonblock(s->stdin_wr);
	if (s->spec.stdin_len == 0) {
		close(s->stdin_wr);
		s->stdin_wr = -1;
	}

	while (!s->init_reaped || s->out.fd >= 0 || s->err.fd >= 0) {
		struct pollfd pfd[P_COUNT];
		int fds[P_COUNT] = {
			[P_CTL] = ctl_open ? CTL_FD : -1,
			[P_SERVER] = s->server_pidfd,
			[P_INIT] = s->init_reaped ? -1 : s->init_pidfd,
			[P_OUT] = s->out.fd,
			[P_ERR] = s->err.fd,
			[P_IN] = s->stdin_wr,
			[P_MSG] = s->msg_rd,
			[P_TIMER] = s->timer_fd,
			[P_BROKER] = s->init_reaped ? -1 : s->broker.pidfd,
		};
		for (int i = 0; i < P_COUNT; i++) {
			pfd[i].fd = fds[i];
			pfd[i].events = i == P_IN ? POLLOUT : POLLIN;
			pfd[i].revents = 0;
		}
		int n = poll(pfd, P_COUNT, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			kill_sandbox(s);
			break;
		}
		if (pfd[P_OUT].revents)
			drain(&s->out);
		if (pfd[P_ERR].revents)
			drain(&s->err);
		if ((s->out.truncated || s->err.truncated) && !(s->res.flags & ZVIZ_RF_OUTPUT_LIMIT) && !s->init_reaped) {
			s->res.flags |= ZVIZ_RF_OUTPUT_LIMIT;
			kill_sandbox(s);
		}
		if (pfd[P_IN].revents)
			feed_stdin(s);
		if (pfd[P_MSG].revents)
			read_child_msg(s);
		if (pfd[P_TIMER].revents) {
			uint64_t ticks;
			if (read(s->timer_fd, &ticks, sizeof(ticks)) == sizeof(ticks) && !s->init_reaped) {
				s->res.flags |= ZVIZ_RF_TIMED_OUT;
				kill_sandbox(s);
			}
			close(s->timer_fd);
			s->timer_fd = -1;
		}
		if (pfd[P_CTL].revents) {
			struct zv_frame f;
			int r = zv_recv_header(CTL_FD, &f);
			if (r == 0 && f.type == ZV_FRAME_KILL && f.len == 0) {
				s->res.flags |= ZVIZ_RF_KILLED_BY_CALLER;
			} else {
				ctl_open = false; /* EOF or garbage: the caller is gone */
			}
			kill_sandbox(s);
		}
		if (pfd[P_SERVER].revents) {
			server_alive = false;
			kill_sandbox(s);
			close(s->server_pidfd);
			s->server_pidfd = -1;
		}
		if (pfd[P_BROKER].revents && zv_broker_exited_abnormally(&s->broker) &&
		    !(s->res.flags & ZVIZ_RF_BROKER_DIED)) {
			/* Fail closed: filtered calls already get ENOSYS; end the invocation. */
			s->res.flags |= ZVIZ_RF_BROKER_DIED;
			kill_sandbox(s);
		}
		if (pfd[P_INIT].revents)
			reap_init(s);
	}
	return server_alive && ctl_open;
}

static bool has_kill_record(const struct sup *s)
{
	for (uint32_t i = 0; i < s->naudit; i++)
		if (s->audit[i].kind == ZVIZ_AUDIT_SECCOMP && s->audit[i].action == ZVIZ_AUDIT_KILL)
			return true;
	return false;
}

/* The SIGSYS status is proof of a kill even when the kernel's record was rate-limited. */
static void add_unknown_kill(struct sup *s)
{
	if (s->naudit >= ZVIZ_MAX_AUDIT)
		return;
	struct zviz_audit *a = &s->audit[s->naudit++];
	memset(a, 0, sizeof(*a));
	a->kind = ZVIZ_AUDIT_SECCOMP;
	a->action = ZVIZ_AUDIT_KILL;
	a->nr = -1;
	a->count = 1;
	snprintf(a->name, sizeof(a->name), "unknown");
}

static void finish_result(struct sup *s)
{
	struct zviz_result *r = &s->res;
	r->duration_ns = zv_now_ns() - s->started_ns;
	int st = s->wait_status;
	if (WIFSIGNALED(st)) {
		r->flags |= ZVIZ_RF_SIGNALED;
		r->term_signal = WTERMSIG(st);
		r->exit_code = -1;
	} else {
		r->exit_code = WEXITSTATUS(st);
	}
	/* Fallback accounting from the init's children (the whole reaped tree); the
	 * cgroup, where present, overrides it with the exact whole-tree figures. */
	r->cpu_ns = ((uint64_t)s->init_rusage.ru_utime.tv_sec + (uint64_t)s->init_rusage.ru_stime.tv_sec) * 1000000000ull +
		    ((uint64_t)s->init_rusage.ru_utime.tv_usec + (uint64_t)s->init_rusage.ru_stime.tv_usec) * 1000ull;
	r->memory_peak_bytes = (uint64_t)s->init_rusage.ru_maxrss * 1024ull;
	zv_cg_stats(&s->cg, r);
	zv_broker_finish(&s->broker, s->audit, &s->naudit, &r->audit_dropped);
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)
		r->flags |= ZVIZ_RF_SECCOMP_KILLED;
	zv_kmsg_collect(s->kmsg_fd, s->spec.uid_base + 2u * (uint32_t)getpid() + 1u, s->audit, &s->naudit,
			&r->audit_dropped);
	s->kmsg_fd = -1;
	if ((r->flags & ZVIZ_RF_SECCOMP_KILLED) && !has_kill_record(s))
		add_unknown_kill(s);
	r->audit_count = s->naudit;
	if (s->out.truncated)
		r->flags |= ZVIZ_RF_STDOUT_TRUNCATED;
	if (s->err.truncated)
		r->flags |= ZVIZ_RF_STDERR_TRUNCATED;
	r->stdout_len = s->out.len;
	r->stderr_len = s->err.len;
}

static int wait_for_go(struct sup *s, struct zviz_error *err)
{
	/* Parked: wait for GO, while watching the server and the init. */
	for (;;) {
		struct pollfd pfd[3] = {
			{ .fd = CTL_FD, .events = POLLIN },
			{ .fd = s->server_pidfd, .events = POLLIN },
			{ .fd = s->init_pidfd, .events = POLLIN },
		};
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return zv_fail(err, ZVIZ_E_SYSTEM, errno, "poll while parked");
		}
		if (pfd[1].revents)
			return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "server exited while the sandbox was parked");
		if (pfd[2].revents)
			return zv_fail(err, ZVIZ_E_PROTOCOL, 0, "sandbox init exited while parked");
		if (pfd[0].revents) {
			struct zv_frame f;
			int r = zv_recv_header(CTL_FD, &f);
			if (r == 0 && f.type == ZV_FRAME_GO && f.len == 0)
				return 0;
			return zv_fail(err, ZVIZ_E_PROTOCOL, r < 0 ? errno : 0, "expected GO while parked");
		}
	}
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
	struct zviz_error err;
	zv_error_clear(&err);
	struct sup s;
	memset(&s, 0, sizeof(s));
	s.init_pidfd = s.server_pidfd = s.sync_wr = s.msg_rd = s.stdin_wr = s.timer_fd = -1;
	s.out.fd = s.err.fd = -1;
	s.ll.ruleset_fd = -1;
	s.kmsg_fd = -1;
	s.broker.pidfd = s.broker.audit_rd = s.broker.sock_child = s.broker.sock_broker = -1;
	int rc = 1;

	/* Only the control socket is ours to keep. */
	syscall(SYS_close_range, CTL_FD + 1, ~0U, 0);
	if (fcntl(CTL_FD, F_GETFD) < 0)
		return 2; /* not started by libzviz */
	fcntl(CTL_FD, F_SETFD, FD_CLOEXEC);

	/* Watch the server: if it dies, so does this sandbox. getppid() after pidfd_open
	 * closes the race where it died first and we were reparented. */
	pid_t server = getppid();
	s.server_pidfd = pidfd_open_(server);
	if (s.server_pidfd < 0 || getppid() != server)
		return 3;

	if (read_spec(&s, &err) < 0 || create_sandbox(&s, &err) < 0) {
		send_error(&err);
		goto out;
	}
	if (zv_send_frame(CTL_FD, ZV_FRAME_READY, NULL, 0) < 0)
		goto out;
	if (wait_for_go(&s, &err) < 0)
		goto out; /* the caller released or died: nothing to tell */

	s.out.cap = s.err.cap = (size_t)s.spec.limits.output_bytes;
	s.out.data = malloc(s.out.cap + 1);
	s.err.data = malloc(s.err.cap + 1);
	if (!s.out.data || !s.err.data) {
		zv_fail(&err, ZVIZ_E_SYSTEM, ENOMEM, "allocate output buffers of %zu bytes", s.out.cap);
		send_error(&err);
		goto out;
	}
	if (arm_timer(&s, &err) < 0) {
		send_error(&err);
		goto out;
	}
	s.kmsg_fd = zv_kmsg_open();
	s.started_ns = zv_now_ns();
	if (write(s.sync_wr, "G", 1) != 1) {
		zv_fail(&err, ZVIZ_E_PROTOCOL, errno, "release the function");
		send_error(&err);
		goto out;
	}
	close(s.sync_wr);
	s.sync_wr = -1;

	bool reply = run_loop(&s);
	finish_result(&s);
	if (reply)
	{
		struct iovec parts[] = {
			{ .iov_base = &s.res, .iov_len = sizeof(s.res) },
			{ .iov_base = s.out.data, .iov_len = s.out.len },
			{ .iov_base = s.err.data, .iov_len = s.err.len },
			{ .iov_base = s.audit, .iov_len = s.naudit * sizeof(s.audit[0]) },
		};
		zv_send_framev(CTL_FD, ZV_FRAME_RESULT, parts, 4);
	}
	rc = 0;
out:
	kill_sandbox(&s);
	if (s.init_pidfd >= 0 && !s.init_reaped) {
		siginfo_t si;
		waitid((idtype_t)P_PIDFD, (id_t)s.init_pidfd, &si, WEXITED);
	}
	{
		uint64_t ignored = 0;
		zv_broker_finish(&s.broker, s.audit, &s.naudit, &ignored);
	}
	zv_sc_free(&s.sc);
	if (zv_cg_destroy(&s.cg, &err) < 0)
		rc = 4;
	return rc;
}
