/* loop.c — the supervisor's event loop: one poll over everything a running sandbox
 * touches (init's pidfd, stdout/stderr/reply pipes, stdin/control pipes, init's message
 * pipe, the timeout timerfd, the control socket, the server's pidfd, the seccomp
 * listener whose notifications it answers), and the measurement of what the invocation did.
 *
 * Every stream is bounded: what we read is capped at outputBytes, or for a log (a CI job's)
 * forwarded and forgotten up to its volume limit (output.c; passing either kills the
 * sandbox: a flood must not burn the host's CPU until the timeout), what we write is
 * written non-blocking as the sandbox reads it, so a function that never reads its
 * stdin cannot stall us.
 *
 * The trusted side's own CPU is measured too: what this supervisor spends from GO on (for a
 * warm runtime, from the start of its boot: loading the function is its first invocation's
 * work) is work the sandbox caused (a storm of denied syscalls keeps it answering
 * notifications, outside the sandbox's cgroup). It is the supervisor's whole CPU clock, not
 * only the part spent on notifications: draining a flood of output, wiping a reused /tmp
 * are the sandbox's doing as much. It is reported apart from the sandbox's cpu_ns, bounded
 * by a budget (sup.h) that is checked during the boot too, and charged by the server.
 *
 * The loop ends when the invocation's answer is complete, not when the sandbox is gone:
 * the function's main process has exited and its stdout and stderr are at EOF, or a warm
 * function answered and closed its fd 4 (answer_complete). Everything the result
 * reports is read then, before the kill: the cgroup's CPU, memory peak and OOM/pids
 * events, the broker's audit table, the trusted side's CPU clock. Killing the rest,
 * reaping and removing the cgroup come after the RESULT (supervisor.c). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

/* The byte a warm runtime's bootstrap writes on the reply channel once loaded. */
#define READY_MARK 'R'

void zv_sup_kill_sandbox(struct sup *s)
{
	/* The cgroup first: it also reaches processes that left the init's tree (there
	 * should be none; the pid namespace already confines them). Then init: when pid
	 * 1 of a pid namespace dies, the kernel SIGKILLs everything else in it. */
	s->killed = true;
	zv_cg_kill(&s->cg);
	if (s->init_pidfd >= 0 && !s->init_reaped)
		syscall(SYS_pidfd_send_signal, s->init_pidfd, SIGKILL, NULL, 0);
}

static int grow(struct pipe_buf *p, size_t cap, struct zviz_error *err)
{
	uint8_t *d = realloc(p->data, cap + 1);
	if (!d)
		return zv_fail(err, ZVIZ_E_SYSTEM, ENOMEM, "allocate an output buffer of %zu bytes", cap);
	p->data = d;
	p->cap = cap;
	if (p->len > cap) {
		p->len = cap;
		p->truncated = true;
	}
	return 0;
}

int zv_sup_alloc_buffers(struct sup *s, struct zviz_error *err)
{
	/* A log keeps nothing: one read's buffer per stream, however much the job prints. It
	 * is a cold sandbox's (zv_sup_apply_go), which has no reply channel. */
	bool log = s->spec.log_bytes != 0;
	size_t cap = log ? ZV_LOG_CHUNK : (size_t)s->spec.limits.output_bytes;
	int r;
	if ((r = grow(&s->out, cap, err)) < 0 || (r = grow(&s->err, cap, err)) < 0 ||
	    (r = grow(&s->reply, log ? 0 : cap, err)) < 0)
		return r;
	return 0;
}

int zv_sup_arm_timer(struct sup *s, uint64_t ms, struct zviz_error *err)
{
	if (s->timer_fd < 0)
		s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (s->timer_fd < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "timerfd_create");
	struct itimerspec its;
	memset(&its, 0, sizeof(its));
	its.it_value.tv_sec = (time_t)(ms / 1000);
	its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
	if (timerfd_settime(s->timer_fd, 0, &its, NULL) < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "arm a timer of %llu ms", (unsigned long long)ms);
	return 0;
}

static void set_nonblock(int fd)
{
	int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* How output is handled now: forwarded only while streaming and running (GO's). */
static struct zv_output *output(struct sup *s)
{
	s->output.ctl_fd = CTL_FD;
	s->output.forward = s->spec.stream && s->running;
	s->output.log_limit = s->spec.log_bytes;
	return &s->output;
}

static void caller_check(struct sup *s)
{
	if (s->output.send_failed && !(s->res.flags & ZVIZ_RF_KILLED_BY_CALLER)) {
		/* The caller stopped reading (send timeout) or is gone: end the invocation. */
		s->res.flags |= ZVIZ_RF_KILLED_BY_CALLER;
		zv_sup_kill_sandbox(s);
	}
}

/* stdout (1) or stderr (2): kept and, streaming, forwarded; or a log's, forwarded only. */
static void drain(struct sup *s, int stream, struct pipe_buf *p)
{
	zv_out_drain(output(s), stream, p);
	caller_check(s);
}

static void feed(struct feed *f)
{
	while (f->off < f->len) {
		ssize_t n = write(f->fd, f->data + f->off, f->len - f->off);
		if (n > 0) {
			f->off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		/* EPIPE (SIGPIPE is ignored, see supervisor.c): the function closed its end
		 * without reading everything. Its choice, and no error of ours. */
		break;
	}
	if (f->keep && f->off >= f->len)
		return;
	close_fd(&f->fd);
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
			char line[sizeof(m.err.msg) + 1];
			m.err.msg[sizeof(m.err.msg) - 1] = '\0';
			size_t l = strnlen(m.err.msg, sizeof(m.err.msg));
			memcpy(line, m.err.msg, l);
			line[l] = '\n';
			zv_out_note(output(s), 2, &s->err, line, l + 1);
			caller_check(s);
			s->got_exit = true;
			s->wait_status = 127 << 8;
		}
		return;
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		close_fd(&s->msg_rd);
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

/* Warm boot: the first byte on the reply channel is the runtime's "loaded" mark. */
static void check_booted(struct sup *s)
{
	if (s->booted || s->reply.len == 0)
		return;
	if (s->reply.data[0] == READY_MARK) {
		memmove(s->reply.data, s->reply.data + 1, s->reply.len - 1);
		s->reply.len--;
	}
	s->booted = true;
}

/* Reusable environment: the answer is a u32 little-endian length and that many bytes;
 * once it is complete the invocation is over (the runtime stays). */
static void check_answered(struct sup *s)
{
	if (!s->reuse || !s->running || s->reply.len < 4)
		return;
	if (s->reply.len - 4 >= zv_u32le(s->reply.data))
		s->answered = true;
}

/* Reads what stdout and stderr hold now, without waiting (a reused runtime's answer is
 * in: what it printed before answering is in the pipes; what comes after is not ours). */
static void drain_output(struct sup *s)
{
	drain(s, 1, &s->out);
	drain(s, 2, &s->err);
}

uint64_t zv_self_cpu_ns(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t since(uint64_t now, uint64_t then)
{
	return now > then ? now - then : 0;
}

static uint64_t trusted_cpu_ns(const struct sup *s)
{
	return since(zv_self_cpu_ns(), s->self_cpu_from);
}

int zv_sup_start_trusted_accounting(struct sup *s, struct zviz_error *err)
{
	/* A warm runtime's boot started the clock already: what the supervisor spent while
	 * the function loaded (at module top level it may storm the broker as well as in its
	 * handler) stays the first invocation's, and counts against its budget. */
	if (!s->charging)
		s->self_cpu_from = zv_self_cpu_ns();
	s->charging = true;
	uint64_t cpu_millis = s->spec.limits.cpu_millis ? s->spec.limits.cpu_millis : 1000;
	/* timeout (ms) × cpus (millis / 1000) in ns = timeout × millis × 1000. */
	uint64_t allowance = s->spec.limits.timeout_ms * cpu_millis * 1000ull;
	s->trusted_budget_ns = allowance / ZV_TRUSTED_CPU_SHARE;
	if (s->trusted_budget_ns < ZV_TRUSTED_CPU_MIN_NS)
		s->trusted_budget_ns = ZV_TRUSTED_CPU_MIN_NS;
	if (s->budget_fd < 0)
		s->budget_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (s->budget_fd < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "timerfd_create for the trusted CPU budget");
	struct itimerspec its;
	memset(&its, 0, sizeof(its));
	its.it_value.tv_nsec = ZV_TRUSTED_CPU_TICK_MS * 1000000L;
	its.it_interval = its.it_value;
	if (timerfd_settime(s->budget_fd, 0, &its, NULL) < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "arm the trusted CPU budget check every %d ms",
			       ZV_TRUSTED_CPU_TICK_MS);
	return 0;
}

void zv_sup_pause_trusted_budget(struct sup *s)
{
	struct itimerspec off;
	memset(&off, 0, sizeof(off));
	if (s->budget_fd >= 0)
		timerfd_settime(s->budget_fd, 0, &off, NULL);
}

/* A sandbox that makes the trusted side spend more than its budget is ended, like one
 * that passes its own timeout: the work it causes outside its cgroup is bounded too. */
void zv_sup_check_trusted_cpu(struct sup *s)
{
	if (!s->charging || s->init_reaped)
		return;
	if (!(s->res.flags & ZVIZ_RF_TRUSTED_CPU) && trusted_cpu_ns(s) > s->trusted_budget_ns) {
		s->res.flags |= ZVIZ_RF_TRUSTED_CPU;
		zv_sup_kill_sandbox(s);
	}
}

static void check_trusted_budget(struct sup *s)
{
	uint64_t ticks;
	if (read(s->budget_fd, &ticks, sizeof(ticks)) == sizeof(ticks))
		zv_sup_check_trusted_cpu(s);
}

/* See the file comment. A warm function's reply counts as its answer only if it wrote
 * one and nobody killed it: a runtime that died without answering (OOM, a signal) or that
 * we ended is reported with its exit status, which its exit brings a moment later. With
 * no CPU figure from the cgroup, the CPU comes from init's rusage: wait for its reaping. */
static bool answer_complete(struct sup *s)
{
	if (s->spec.answer_on_reply && s->reply.fd < 0 && s->reply.len > 0 && !s->reply.truncated && !s->killed &&
	    zv_cg_counts_cpu(&s->cg))
		return true;
	bool ended = zv_cg_counts_cpu(&s->cg) ? s->got_exit : s->init_reaped;
	return ended && s->out.fd < 0 && s->err.fd < 0 && s->reply.fd < 0;
}

enum { P_CTL, P_SERVER, P_INIT, P_OUT, P_ERR, P_REPLY, P_IN, P_CTLIN, P_MSG, P_TIMER, P_BROKER, P_BUDGET, P_COUNT };

bool zv_sup_loop(struct sup *s, bool until_booted)
{
	bool server_alive = true, caller_alive = true;
	int *fds_nb[] = { &s->out.fd, &s->err.fd, &s->reply.fd, &s->msg_rd, &s->in.fd, &s->ctl.fd };
	for (size_t i = 0; i < sizeof(fds_nb) / sizeof(fds_nb[0]); i++)
		set_nonblock(*fds_nb[i]);

	for (;;) {
		if (s->answered)
			break;
		if (until_booted ? (s->booted || s->init_reaped) : answer_complete(s))
			break;
		/* Before GO the control socket is not ours to read: the caller may be idle. */
		int fds[P_COUNT] = {
			[P_CTL] = (!until_booted && caller_alive) ? CTL_FD : -1,
			[P_SERVER] = s->server_pidfd,
			[P_INIT] = s->init_reaped ? -1 : s->init_pidfd,
			[P_OUT] = s->out.fd,
			[P_ERR] = s->err.fd,
			[P_REPLY] = s->reply.fd,
			[P_IN] = s->running ? s->in.fd : -1,
			[P_CTLIN] = (s->running && s->ctl.off < s->ctl.len) ? s->ctl.fd : -1,
			[P_MSG] = s->msg_rd,
			[P_TIMER] = s->timer_fd,
			[P_BROKER] = zv_broker_pollfd(&s->broker),
			[P_BUDGET] = ((s->running || until_booted) && !s->init_reaped) ? s->budget_fd : -1,
		};
		struct pollfd pfd[P_COUNT];
		for (int i = 0; i < P_COUNT; i++) {
			pfd[i].fd = fds[i];
			pfd[i].events = (i == P_IN || i == P_CTLIN) ? POLLOUT : POLLIN;
			pfd[i].revents = 0;
		}
		if (poll(pfd, P_COUNT, -1) < 0) {
			if (errno == EINTR)
				continue;
			zv_sup_kill_sandbox(s);
			return false;
		}
		if (pfd[P_OUT].revents)
			drain(s, 1, &s->out);
		if (pfd[P_ERR].revents)
			drain(s, 2, &s->err);
		if (pfd[P_REPLY].revents) {
			zv_out_keep(&s->reply);
			check_booted(s);
			check_answered(s);
		}
		if ((s->out.truncated || s->err.truncated || s->reply.truncated) && !(s->res.flags & ZVIZ_RF_OUTPUT_LIMIT) &&
		    !s->init_reaped) {
			s->res.flags |= ZVIZ_RF_OUTPUT_LIMIT;
			zv_sup_kill_sandbox(s);
		}
		if (pfd[P_IN].revents)
			feed(&s->in);
		if (pfd[P_CTLIN].revents)
			feed(&s->ctl);
		if (pfd[P_MSG].revents)
			read_child_msg(s);
		if (pfd[P_TIMER].revents) {
			uint64_t ticks;
			if (read(s->timer_fd, &ticks, sizeof(ticks)) == sizeof(ticks) && !s->init_reaped) {
				s->res.flags |= ZVIZ_RF_TIMED_OUT;
				zv_sup_kill_sandbox(s);
			}
			close_fd(&s->timer_fd);
		}
		if (pfd[P_CTL].revents) {
			struct zv_frame f;
			int r = zv_recv_header(CTL_FD, &f);
			if (r == 0 && f.type == ZV_FRAME_KILL && f.len == 0)
				s->res.flags |= ZVIZ_RF_KILLED_BY_CALLER;
			else
				caller_alive = false; /* EOF or garbage: the caller is gone */
			zv_sup_kill_sandbox(s);
		}
		if (pfd[P_SERVER].revents) {
			server_alive = false;
			zv_sup_kill_sandbox(s);
			close_fd(&s->server_pidfd);
		}
		if (pfd[P_BROKER].revents)
			zv_broker_serve(&s->broker, pfd[P_BROKER].revents);
		if (s->broker.failed && !(s->res.flags & ZVIZ_RF_BROKER_DIED) && !s->init_reaped) {
			/* Fail closed: filtered calls already get ENOSYS; end the invocation. */
			s->res.flags |= ZVIZ_RF_BROKER_DIED;
			zv_sup_kill_sandbox(s);
		}
		if (pfd[P_BUDGET].revents)
			check_trusted_budget(s);
		if (pfd[P_INIT].revents)
			reap_init(s);
		if (until_booted && !server_alive)
			return false;
	}
	if (!until_booted)
		drain_output(s); /* answered on fd 4 while the runtime is still exiting, or reused */
	return server_alive && caller_alive;
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

void zv_sup_finish_result(struct sup *s)
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
	if (!s->got_exit)
		r->flags |= ZVIZ_RF_ANSWERED;
	/* Read while the sandbox still exists, before anything kills it (see the file comment). */
	zv_cg_stats(&s->cg, r);
	zv_broker_audit(&s->broker, s->audit, &s->naudit, &r->audit_dropped);
	/* Our own CPU clock: every decision before the answer is in it. */
	r->trusted_cpu_ns = trusted_cpu_ns(s);
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)
		r->flags |= ZVIZ_RF_SECCOMP_KILLED;
	zv_kmsg_collect(s->kmsg_fd, s->spec.uid_base + 2u * (uint32_t)getpid() + 1u,
			(r->flags & ZVIZ_RF_SECCOMP_KILLED) != 0, s->audit, &s->naudit, &r->audit_dropped);
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
	r->reply_len = s->reply.len;
}
