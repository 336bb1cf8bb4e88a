/* sandbox.c — the one place that orders the isolation layers.
 *
 * This runs in the child that the supervisor clone()d with new user, mount, pid, ipc,
 * uts, net and cgroup namespaces. The supervisor is single-threaded, so this child may
 * allocate and call libc freely; it never returns, it _exit()s.
 *
 * The child becomes pid 1 of the sandbox. It builds the view, parks until the caller
 * releases the function, forks the function's process, reaps every orphan that gets
 * reparented to it, and exits when the function's main process ends — which makes the
 * kernel SIGKILL everything left in the pid namespace. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

static void send_msg(int fd, int type, int wait_status, const struct zviz_error *err)
{
	struct zv_child_msg m;
	memset(&m, 0, sizeof(m));
	m.type = type;
	m.wait_status = wait_status;
	if (err)
		m.err = *err;
	/* Best effort: if the supervisor is gone we die with it anyway (PDEATHSIG). */
	ssize_t n = write(fd, &m, sizeof(m));
	(void)n;
}

__attribute__((noreturn)) static void die(const struct zv_child_ctx *ctx, const struct zviz_error *err)
{
	send_msg(ctx->msg_wr, ZV_MSG_ERROR, 0, err);
	_exit(127);
}

static char wait_byte(const struct zv_child_ctx *ctx)
{
	char c;
	for (;;) {
		ssize_t n = read(ctx->sync_rd, &c, 1);
		if (n == 1)
			return c;
		if (n < 0 && errno == EINTR)
			continue;
		_exit(126); /* supervisor gone: nothing to report to */
	}
}

/* zv_proc_close_fds_from wants the fds to keep in ascending order. */
static void sort_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (fds[j] < fds[i]) {
				int t = fds[i];
				fds[i] = fds[j];
				fds[j] = t;
			}
}

/* The function's process: from here on nothing of ours may remain. */
__attribute__((noreturn)) static void exec_function(const struct zv_child_ctx *ctx, int exec_err_wr)
{
	const struct zv_spec *s = ctx->spec;
	struct zviz_error err;
	zv_error_clear(&err);

	/* The supervisor ignores SIGPIPE, and an ignored signal stays ignored across execve:
	 * give the function the default back, so its pipes behave as anywhere else. */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	if (sigaction(SIGPIPE, &dfl, NULL) < 0) {
		zv_fail(&err, ZVIZ_E_SYSTEM, errno, "restore the default SIGPIPE action");
		goto fail;
	}
	/* A new session: no controlling terminal, immune to the server's job control. */
	if (setsid() < 0) {
		zv_fail(&err, ZVIZ_E_SYSTEM, errno, "setsid");
		goto fail;
	}
	/* Only 0, 1, 2 (and a warm function's 3 and 4) survive execve. Kept until then, each
	 * O_CLOEXEC: the exec-status pipe, the Landlock ruleset and the socket to the supervisor
	 * (the last two are closed once used). They move above 63 first, so that placing
	 * stdio and fds 3 and 4 overwrites none of them. */
	int broker_sock = ctx->broker_sock;
	int keep[3];
	size_t nkeep = 0;
	int *movers[] = { &exec_err_wr, &ctx->ll->ruleset_fd, &broker_sock };
	for (size_t i = 0; i < 3; i++) {
		if (*movers[i] < 0)
			continue;
		int high = fcntl(*movers[i], F_DUPFD_CLOEXEC, 64);
		if (high < 0) {
			zv_fail(&err, ZVIZ_E_SYSTEM, errno, "move fd %d", *movers[i]);
			goto fail;
		}
		*movers[i] = high;
		keep[nkeep++] = high;
	}
	sort_fds(keep, nkeep);
	if (zv_proc_stdio(ctx->stdin_rd, ctx->stdout_wr, ctx->stderr_wr, &err) < 0)
		goto fail;
	int first_free = 3;
	if (ctx->ctl_rd >= 0) {
		if (zv_proc_place(ctx->ctl_rd, 3, &err) < 0 || zv_proc_place(ctx->reply_wr, 4, &err) < 0)
			goto fail;
		first_free = 5;
	}
	if (zv_proc_close_fds_from(first_free, keep, nkeep, &err) < 0)
		goto fail;
	if (zv_proc_set_rlimits(&s->limits, &err) < 0)
		goto fail;
	/* Layer C, AppArmor (hosts that have it): confinement starts at our execve. */
	if (zv_apparmor_change_onexec(s->apparmor_profile, &err) < 0)
		goto fail;
	if (zv_caps_lock_down(ctx->cap_last, true, &err) < 0)
		goto fail;
	/* Layer C, after no_new_privs (which Landlock requires) and before seccomp, which
	 * comes last so that the filter need not allow the Landlock syscalls. */
	if (zv_ll_enforce(ctx->ll, &err) < 0)
		goto fail;
	const char *workdir = s->workdir ? s->workdir : "/tmp";
	if (chdir(workdir) < 0) {
		zv_fail(&err, ZVIZ_E_SYSTEM, errno, "chdir `%s`", workdir);
		goto fail;
	}
	/* Layer B, last before execve: from here on every syscall is filtered, and only
	 *    what the filter always allows (sendmsg, close, write, execve, exit) is used. */
	if (zv_sc_load(ctx->sc, broker_sock, &err) < 0)
		goto fail;
	execve(s->argv[0], s->argv, s->envp);
	zv_fail(&err, ZVIZ_E_EXEC, errno, "execve `%s`", s->argv[0]);
fail: {
	ssize_t n = write(exec_err_wr, &err, sizeof(err));
	(void)n;
	_exit(127);
}
}

__attribute__((noreturn)) void zv_sandbox_main(const struct zv_child_ctx *ctx)
{
	struct zviz_error err;
	zv_error_clear(&err);

	/* 1. Die with the supervisor. If it already died between clone and here, the sync
	 *    read below sees EOF and we exit. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);

	/* 2. Drop every fd of the supervisor's that is not ours. */
	int keep[11] = { ctx->sync_rd, ctx->msg_wr, ctx->stdin_rd, ctx->stdout_wr, ctx->stderr_wr };
	size_t nkeep = 5;
	if (ctx->ctl_rd >= 0) {
		keep[nkeep++] = ctx->ctl_rd;
		keep[nkeep++] = ctx->reply_wr;
	}
	if (ctx->ll->ruleset_fd >= 0)
		keep[nkeep++] = ctx->ll->ruleset_fd;
	if (ctx->broker_sock >= 0)
		keep[nkeep++] = ctx->broker_sock;
	if (ctx->image_fd >= 0)
		keep[nkeep++] = ctx->image_fd;
	if (ctx->workspace_fd >= 0)
		keep[nkeep++] = ctx->workspace_fd;
	sort_fds(keep, nkeep);
	if (zv_proc_close_fds_from(ctx->close_from, keep, nkeep, &err) < 0)
		die(ctx, &err);

	/* 3. Wait until the supervisor has written our uid/gid maps (and, on cgroup v1, put
	 *    us into our cgroup): before that we are nobody and cannot set anything up,
	 *    and no code runs outside the cgroup. */
	if (wait_byte(ctx) != 'M')
		_exit(126);

	/* Still the host's root kuid, which the new namespace does not map: become the
	 *    namespace's root (the unprivileged host id the supervisor mapped) so files we
	 *    create have an owner. The namespace's capabilities stay ours for setup. */
	if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
		zv_fail(&err, ZVIZ_E_NAMESPACE, errno, "become root of the new user namespace");
		die(ctx, &err);
	}
	/* A credential change clears the parent-death signal: arm it again, or a sandbox would
	 * outlive a killed supervisor (and with it its timeout). A supervisor that died in
	 * between is seen at the next read of the sync pipe (EOF). */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);

	/* 4. uts: our own hostname. */
	if (sethostname(ZV_HOSTNAME, strlen(ZV_HOSTNAME)) < 0 || setdomainname("(none)", 6) < 0) {
		zv_fail(&err, ZVIZ_E_NAMESPACE, errno, "set hostname `%s`", ZV_HOSTNAME);
		die(ctx, &err);
	}
	/* 5. net: a private namespace gets only lo, up; a joined one is ZViz's, hands off. */
	if (!ctx->joined_netns && zv_net_loopback_up(&err) < 0)
		die(ctx, &err);
	/* 6. mount: the new root (tmpfs with the host's /usr, or an image's root, moved in
	 *    here and closed), pivoted into, host tree detached. */
	if (zv_mnt_build_root(ctx->spec, ctx->image_fd, ctx->workspace_fd, &err) < 0)
		die(ctx, &err);

	/* 6b. No nested user namespaces, as a layer-A backstop to the seccomp rule: a new
	 *     user namespace would hand the function a full capability set over namespaces
	 *     it owns (and with it kernel code paths unprivileged users never reach). The
	 *     limit is per user namespace and ours to set while we hold its capabilities. */
	if (zv_proc_write_sysctl("/proc/sys/user/max_user_namespaces", "0", &err) < 0)
		die(ctx, &err);

	/* 7. Landlock rules name paths as the sandbox sees them: resolve them now, in the
	 *    new root. */
	if (zv_ll_add_paths(ctx->spec, ctx->ll, &err) < 0)
		die(ctx, &err);

	/* 8. Park until the caller releases the function. */
	send_msg(ctx->msg_wr, ZV_MSG_READY, 0, NULL);
	if (wait_byte(ctx) != 'G')
		_exit(126);

	int exec_pipe[2];
	if (pipe2(exec_pipe, O_CLOEXEC) < 0) {
		zv_fail(&err, ZVIZ_E_SYSTEM, errno, "pipe for exec status");
		die(ctx, &err);
	}
	pid_t fn = fork();
	if (fn < 0) {
		zv_fail(&err, ZVIZ_E_SYSTEM, errno, "fork the function's process");
		die(ctx, &err);
	}
	if (fn == 0) {
		close(exec_pipe[0]);
		exec_function(ctx, exec_pipe[1]);
	}

	/* 9. init: hold nothing the function could use, then reap. */
	close(exec_pipe[1]);
	close(ctx->stdin_rd);
	close(ctx->stdout_wr);
	close(ctx->stderr_wr);
	close(ctx->sync_rd);
	if (ctx->ctl_rd >= 0) {
		close(ctx->ctl_rd);
		close(ctx->reply_wr);
	}
	if (ctx->broker_sock >= 0)
		close(ctx->broker_sock);
	/* The function's uid differs from ours, and we are not dumpable: it can neither
	 * ptrace nor read our memory; signals from inside the namespace to pid 1 without a
	 * handler are discarded by the kernel. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (zv_caps_lock_down(ctx->cap_last, false, &err) < 0)
		die(ctx, &err);

	struct zviz_error exec_err;
	ssize_t n;
	do
		n = read(exec_pipe[0], &exec_err, sizeof(exec_err));
	while (n < 0 && errno == EINTR);
	close(exec_pipe[0]);
	if (n == (ssize_t)sizeof(exec_err))
		send_msg(ctx->msg_wr, ZV_MSG_ERROR, 0, &exec_err);

	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, __WALL);
		if (p == fn) {
			if (n != (ssize_t)sizeof(exec_err))
				send_msg(ctx->msg_wr, ZV_MSG_EXIT, st, NULL);
			_exit(0);
		}
		if (p < 0 && errno != EINTR)
			_exit(0);
	}
}
