/* test_notify.c — the supervisor's seccomp notification handling (broker.c) fails closed.
 *
 * There is no broker process: the supervisor answers the notifications in its own loops
 * and is the only holder of the listener. This checks what that rests on, with the real
 * broker.c code and a real filter, and without the pid namespace that in a sandbox kills
 * the function a moment after its supervisor (so the window after the death is long here):
 *
 *   harness ── fork ──► "supervisor": zv_broker_prepare, fork the target, then a loop of
 *                        poll(zv_broker_pollfd) → zv_broker_serve
 *                              └── fork ──► target: zv_sc_load (the listener goes over the
 *                                           socket), then getppid() in a loop, each result
 *                                           written to the harness's pipe
 *
 * The filter sends getppid to the supervisor, which answers EPERM (no decision of its
 * own for it). The harness waits for answered calls, SIGKILLs the supervisor, and reads
 * on: after the first call that was not answered EPERM, every call fails with ENOSYS (the
 * kernel's answer once the listener is gone), none succeeds, for thousands of calls. The
 * target is reparented to the harness (a child subreaper) and reaped at the end.
 *
 * Then, with the filter zv_sc_compile makes from an allowlist that has seccomp: a filter
 * of the function's own loads, but a listener of its own does not, also once the
 * supervisor's listener is closed (when the kernel would otherwise accept one, and that
 * listener would receive, and could let through, every call outside the allowlist). */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "sandbox.h"

#define ANSWERED_BEFORE 200  /* calls the supervisor answers before it is killed */
#define FAILED_AFTER 5000    /* calls read after its death */

#include "check.h"

/* getppid → user notification, everything else allowed (the native architecture only). */
static struct sock_filter prog[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

/* One record per call: the call's errno (0: it succeeded). */
__attribute__((noreturn)) static void target(int sock, int out)
{
	struct zv_seccomp sc = { .prog = prog, .len = (unsigned short)(sizeof(prog) / sizeof(prog[0])) };
	struct zviz_error err;
	zv_error_clear(&err);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || zv_sc_load(&sc, sock, &err) < 0)
		_exit(2);
	pid_t self = getpid();
	if (write(out, &self, sizeof(self)) != sizeof(self))
		_exit(2);
	for (;;) {
		long r = syscall(SYS_getppid);
		int e = r < 0 ? errno : 0;
		if (write(out, &e, sizeof(e)) != sizeof(e))
			_exit(0); /* the harness is done */
	}
}

__attribute__((noreturn)) static void supervisor(int out)
{
	struct zv_spec spec;
	memset(&spec, 0, sizeof(spec));
	struct zv_seccomp sc = { .prog = prog, .len = 1 };
	struct zv_broker b;
	struct zviz_error err;
	zv_error_clear(&err);
	if (zv_broker_prepare(&b, &spec, &sc, &err) < 0)
		_exit(3);
	pid_t t = fork();
	if (t < 0)
		_exit(3);
	if (t == 0) {
		close(b.sock);
		target(b.sock_child, out);
	}
	close(b.sock_child);
	b.sock_child = -1;
	close(out);
	for (;;) {
		struct pollfd p = { .fd = zv_broker_pollfd(&b), .events = POLLIN, .revents = 0 };
		if (poll(&p, 1, -1) > 0)
			zv_broker_serve(&b, p.revents);
		if (b.failed)
			_exit(4);
	}
}

static int read_int(int fd, int *v)
{
	size_t got = 0;
	while (got < sizeof(*v)) {
		ssize_t n = read(fd, (char *)v + got, sizeof(*v) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

/* A filter that allows everything: what the function tries to add. */
static struct sock_filter allow_all[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };

/* The function's side: load the compiled filter, wait for the word, then try a plain
 * filter and one with a listener; each call's result (>= 0) or -errno goes to `out`. */
__attribute__((noreturn)) static void nested_target(const struct zv_seccomp *sc, int sock, int go, int out)
{
	struct zviz_error err;
	zv_error_clear(&err);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || zv_sc_load(sc, sock, &err) < 0)
		_exit(2);
	char word;
	if (read(go, &word, 1) != 1)
		_exit(2);
	struct sock_fprog fprog = { .len = 1, .filter = allow_all };
	int r[2];
	r[0] = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) < 0 ? -errno : 0;
	long l = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
	r[1] = l < 0 ? -errno : (int)l;
	_exit(write(out, r, sizeof(r)) == sizeof(r) ? 0 : 2);
}

static void nested_listener(void)
{
	char *allow[] = { "seccomp", "read" };
	struct zv_spec spec;
	memset(&spec, 0, sizeof(spec));
	spec.seccomp_flags = ZV_SC_ENABLED;
	spec.sc_allow = allow;
	spec.nsc_allow = sizeof(allow) / sizeof(allow[0]);
	struct zv_seccomp sc;
	struct zv_broker b;
	struct zviz_error err;
	zv_error_clear(&err);
	int go[2], out[2];
	if (zv_sc_compile(&spec, &sc, &err) < 0 || zv_broker_prepare(&b, &spec, &sc, &err) < 0 || pipe2(go, O_CLOEXEC) < 0 ||
	    pipe2(out, O_CLOEXEC) < 0) {
		CHECK(0, "nested listener: set up (%s)", err.msg);
		return;
	}
	pid_t t = fork();
	if (t == 0) {
		close(b.sock);
		nested_target(&sc, b.sock_child, go[0], out[1]);
	}
	close(b.sock_child);
	b.sock_child = -1;
	close(out[1]);
	/* Receive the listener, then close it as the supervisor's death would. */
	while (b.listener < 0 && b.sock >= 0) {
		struct pollfd p = { .fd = zv_broker_pollfd(&b), .events = POLLIN, .revents = 0 };
		if (poll(&p, 1, 5000) <= 0)
			break;
		zv_broker_serve(&b, p.revents);
	}
	CHECK(b.listener >= 0, "nested listener: the function's filter loaded and its listener came over");
	zv_broker_finish(&b);
	int r[2] = { 1, 1 };
	bool wrote = write(go[1], "g", 1) == 1;
	bool read_back = wrote && read_int(out[0], &r[0]) == 0 && read_int(out[0], &r[1]) == 0;
	CHECK(read_back && r[0] == 0, "nested listener: a filter of the function's own loads (got %d)", r[0]);
	CHECK(read_back && r[1] < 0,
	      "nested listener: a listener of the function's own is refused once the supervisor's is closed (got %d%s)",
	      r[1], r[1] == -ENOSYS ? ", ENOSYS: the call went to the closed listener" : "");
	close(go[0]);
	close(go[1]);
	close(out[0]);
	int st;
	kill(t, SIGKILL);
	waitpid(t, &st, 0);
	free(sc.prog);
}

int main(void)
{
	struct seccomp_notif_sizes sizes;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) {
		printf("skip seccomp user notification unavailable: %s\n", strerror(errno));
		return 0;
	}
	/* The target outlives its parent (the supervisor): it comes to us, to be reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return 1;
	pid_t sup = fork();
	if (sup < 0)
		return 1;
	if (sup == 0) {
		close(pipefd[0]);
		supervisor(pipefd[1]);
	}
	close(pipefd[1]);

	pid_t tgt = 0;
	int v, answered = 0, other_before = 0;
	if (read_int(pipefd[0], &tgt) < 0) {
		CHECK(0, "the target loaded its filter and handed the listener over");
		return 1;
	}
	while (answered < ANSWERED_BEFORE && read_int(pipefd[0], &v) == 0) {
		if (v == EPERM)
			answered++;
		else
			other_before++;
	}
	CHECK(answered == ANSWERED_BEFORE && other_before == 0,
	      "the supervisor answers the target's getppid with EPERM: %d answered, %d otherwise", answered,
	      other_before);

	kill(sup, SIGKILL);
	int st;
	waitpid(sup, &st, 0);
	/* What was written before the death is still in the pipe: answered calls, then (from
	 * the death on) only failures. */
	int more_answered = 0, enosys = 0, succeeded = 0, other = 0, after_failure_answered = 0;
	bool failing = false;
	while (enosys < FAILED_AFTER && read_int(pipefd[0], &v) == 0) {
		if (v == 0)
			succeeded++;
		else if (v == ENOSYS) {
			enosys++;
			failing = true;
		} else if (v == EPERM) {
			more_answered++;
			if (failing)
				after_failure_answered++;
		} else {
			other++;
		}
	}
	CHECK(enosys == FAILED_AFTER && succeeded == 0 && other == 0 && after_failure_answered == 0,
	      "after SIGKILL of the supervisor: %d calls failed with ENOSYS, %d succeeded, %d other errors, %d answered "
	      "after the first failure (%d answered in flight before it)",
	      enosys, succeeded, other, after_failure_answered, more_answered);

	close(pipefd[0]); /* the target's next write fails: it exits */
	kill(tgt, SIGKILL);
	while (waitpid(-1, &st, 0) > 0 || errno == EINTR)
		;

	nested_listener();
	printf("%s\n", failures ? "test-notify FAILED" : "test-notify passed");
	return failures ? 1 : 0;
}
