/* reuse.c — a reusable environment: one sandbox whose runtime serves many invocations
 * of one function version, one at a time, with a reset between them.
 *
 * The sandbox is made and booted exactly as a warm one (every layer, the version's
 * profile and limits). Then, per invocation: GO arrives with the invocation's limits and
 * work; the work goes to fd 3 as a u32 little-endian length and the bytes; the runtime's
 * answer on fd 4 is framed the same way and ends the invocation (the runtime stays up).
 * CPU is the cgroup's delta since what the earlier invocations were charged, so the first
 * is charged the boot (the runtime's start and the function's module load, which a tenant
 * controls: left out, a function that does its work at load and is reused once would run
 * unbilled), and the supervisor's trusted CPU of the first counts from the boot too
 * (supervisor.c). The memory peak is reset at GO where the kernel can (v1
 * memory.max_usage_in_bytes, v2 memory.peak through a kept fd), and the result says when
 * only the environment's peak is known.
 *
 * Before RESULT, the reset decides whether the environment may serve again. What the
 * tenant opted into keeping is the runtime's own memory (globals, module caches); what it
 * did not is anything that outlives an invocation on its own: another process (a
 * background job that would run, and be charged, during someone else's invocation — of
 * the same function, but still), a listening socket, a changed rlimit. Any of these
 * discards the environment rather than repair it: a discard costs one cold start, a
 * wrong repair leaks state. With RESET_TMP, /tmp and /dev/shm are emptied.
 *
 * Emptying runs as host root inside trees the function wrote: every name is resolved
 * beneath a directory fd with no symlink followed (openat2 RESOLVE_IN_ROOT |
 * RESOLVE_NO_SYMLINKS for the mount point, O_NOFOLLOW and unlinkat below it), so a
 * link planted by the function can never send the deletion outside its own tmpfs. A pass
 * that leaves anything behind discards.
 *
 * While parked the runtime is stopped (SIGSTOP through a pidfd, every thread in state T)
 * and continued at GO: nothing of it runs unmetered, and the reset, which runs stopped,
 * cannot race it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

#define MAX_PROCS 1024
#define MAX_WIPE_DEPTH 64
#define MAX_WIPE_ENTRIES 100000
/* Memory still charged after a reset above this share of the limit discards. */
#define MAX_KEPT_MEMORY_PERCENT 90u
/* How long the runtime's threads may take to stop after SIGSTOP before it discards. */
#define STOP_WAIT_MS 2000

/* State and parent of a host pid from /proc/<pid>/stat (the name may hold anything:
 * parse after its last ')'). */
static bool proc_stat(pid_t pid, char *state, pid_t *ppid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (zv_read_small(AT_FDCWD, path, buf, sizeof(buf)) <= 0)
		return false;
	char *p = strrchr(buf, ')');
	int pp;
	if (!p || sscanf(p + 1, " %c %d", state, &pp) != 2)
		return false;
	*ppid = (pid_t)pp;
	return true;
}

/* The runtime's main process is init's one child when it has booted. */
static pid_t find_runtime(struct sup *s)
{
	pid_t procs[MAX_PROCS];
	ssize_t n = zv_cg_procs(&s->cg, procs, MAX_PROCS);
	pid_t found = 0;
	for (ssize_t i = 0; i < n; i++) {
		char st;
		pid_t pp;
		if (procs[i] == s->init_pid || !proc_stat(procs[i], &st, &pp) || pp != s->init_pid)
			continue;
		if (found)
			return 0; /* two candidates: not one we can tell apart */
		found = procs[i];
	}
	return found;
}

static ssize_t runtime_limits(pid_t pid, char *buf, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	return zv_read_small(AT_FDCWD, path, buf, cap);
}

/* Any process of the sandbox but init and the runtime (zombies excepted: they hold
 * nothing and are reaped by their parent or init). */
static bool other_processes(struct sup *s)
{
	pid_t procs[MAX_PROCS];
	ssize_t n = zv_cg_procs(&s->cg, procs, MAX_PROCS);
	if (n < 0)
		return true;
	for (ssize_t i = 0; i < n; i++) {
		char st;
		pid_t pp;
		if (procs[i] == s->init_pid || procs[i] == s->re.runtime_pid)
			continue;
		if (proc_stat(procs[i], &st, &pp) && (st == 'Z' || st == 'X'))
			continue;
		if (kill(procs[i], 0) < 0 && errno == ESRCH)
			continue;
		return true;
	}
	return false;
}

/* A listening socket in the sandbox's network namespace: TCP in LISTEN, UDP bound and
 * unconnected, a unix socket accepting connections. The namespace is the sandbox's own
 * (private, or the one ZViz made for its egress), so every entry is its. */
static bool table_has_listener(pid_t pid, const char *table, bool udp)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/net/%s", (int)pid, table);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno != ENOENT; /* unreadable: cannot tell, so it counts */
	char line[512];
	bool found = false;
	if (!fgets(line, sizeof(line), f)) { /* header */
		fclose(f);
		return false;
	}
	while (!found && fgets(line, sizeof(line), f)) {
		char local[128], remote[128];
		unsigned st;
		if (sscanf(line, " %*[^:]: %127s %127s %x", local, remote, &st) != 3)
			continue;
		if (!udp)
			found = st == 0x0A; /* TCP_LISTEN */
		else
			found = strspn(remote, "0:") == strlen(remote); /* bound, no peer */
	}
	fclose(f);
	return found;
}

static bool unix_listener(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/net/unix", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno != ENOENT;
	char line[512];
	bool found = false;
	if (fgets(line, sizeof(line), f)) {
		while (!found && fgets(line, sizeof(line), f)) {
			unsigned flags;
			if (sscanf(line, "%*s %*s %*s %x", &flags) == 1)
				found = (flags & 0x10000u) != 0; /* __SO_ACCEPTCON */
		}
	}
	fclose(f);
	return found;
}

static bool listening_sockets(pid_t pid)
{
	return table_has_listener(pid, "tcp", false) || table_has_listener(pid, "tcp6", false) ||
	       table_has_listener(pid, "udp", true) || table_has_listener(pid, "udp6", true) || unix_listener(pid);
}

/* Removes everything beneath dfd without following a link. Returns false if anything
 * is left (too deep, too many entries, a race with the runtime, an error). */
static bool wipe(int dfd, int depth, size_t *budget)
{
	if (depth > MAX_WIPE_DEPTH)
		return false;
	int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return false;
	}
	bool ok = true;
	struct dirent *e;
	while (ok && (e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if ((*budget)-- == 0) {
			ok = false;
			break;
		}
		if (unlinkat(dfd, e->d_name, 0) == 0 || errno == ENOENT)
			continue;
		if (errno != EISDIR && errno != EPERM) {
			ok = false;
			break;
		}
		int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0) {
			ok = false;
			break;
		}
		ok = wipe(sub, depth + 1, budget);
		close(sub);
		if (ok && unlinkat(dfd, e->d_name, AT_REMOVEDIR) != 0 && errno != ENOENT)
			ok = false;
	}
	closedir(d);
	return ok;
}

/* Empties the sandbox's `name` (a mount point beneath its root) and checks it stayed empty. */
static bool empty_dir(int rootfd, const char *name)
{
	struct open_how how;
	memset(&how, 0, sizeof(how));
	how.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
	int dfd = (int)syscall(SYS_openat2, rootfd, name, &how, sizeof(how));
	if (dfd < 0)
		return errno == ENOENT; /* no such mount in this sandbox: nothing to keep */
	size_t budget = MAX_WIPE_ENTRIES;
	bool ok = wipe(dfd, 0, &budget);
	if (ok) {
		/* A second look: nothing was created while we removed. */
		int again = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
		DIR *d = again >= 0 ? fdopendir(again) : NULL;
		struct dirent *e;
		while (d && ok && (e = readdir(d)))
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				ok = false;
		if (d)
			closedir(d);
		else if (again >= 0)
			close(again);
	}
	close(dfd);
	return ok;
}

static bool empty_tmp(struct sup *s)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/root", (int)s->re.runtime_pid);
	int rootfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return false;
	bool ok = empty_dir(rootfd, "tmp") && empty_dir(rootfd, "dev/shm");
	close(rootfd);
	return ok;
}

/* True while the runtime has not exited: what /proc/<runtime_pid> said was about it. */
static bool runtime_alive(const struct sup *s)
{
	struct pollfd p = { .fd = s->re.runtime_pidfd, .events = POLLIN };
	return s->re.runtime_pidfd >= 0 && poll(&p, 1, 0) == 0;
}

/* Every thread of the runtime is in group stop (or already gone). */
static bool all_threads_stopped(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool stopped = true;
	struct dirent *e;
	while (stopped && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char stat_path[sizeof(path) + sizeof(e->d_name) + 8], buf[1024];
		snprintf(stat_path, sizeof(stat_path), "%s/%s/stat", path, e->d_name);
		if (zv_read_small(AT_FDCWD, stat_path, buf, sizeof(buf)) <= 0)
			continue; /* the thread exited */
		char *p = strrchr(buf, ')');
		char st = p && p[1] == ' ' ? p[2] : '?';
		stopped = st == 'T' || st == 'Z' || st == 'X';
	}
	closedir(d);
	return stopped;
}

/* Parks the runtime: SIGSTOP through its pidfd (never a reused pid), then wait until every
 * thread has stopped. From then on nothing of the sandbox but init may run; whatever else
 * exists is found by the reset, which cannot race a thread that is still running. */
static bool stop_runtime(struct sup *s)
{
	if (s->re.runtime_pidfd < 0 || syscall(SYS_pidfd_send_signal, s->re.runtime_pidfd, SIGSTOP, NULL, 0) < 0)
		return false;
	/* By the clock: answering notifications makes a round shorter than its 1 ms. */
	uint64_t deadline = zv_now_ns() + STOP_WAIT_MS * 1000000ull;
	while (zv_now_ns() < deadline) {
		if (!runtime_alive(s))
			return false;
		if (all_threads_stopped(s->re.runtime_pid))
			return true;
		/* A thread may be in a filtered call until the signal reaches it: answer it
		 * meanwhile (the stop interrupts a wait for an answer anyway). */
		struct pollfd p = { .fd = zv_broker_pollfd(&s->broker), .events = POLLIN, .revents = 0 };
		if (poll(&p, 1, 1) > 0)
			zv_broker_serve(&s->broker, p.revents);
	}
	return false;
}

static bool continue_runtime(struct sup *s)
{
	return s->re.runtime_pidfd >= 0 && syscall(SYS_pidfd_send_signal, s->re.runtime_pidfd, SIGCONT, NULL, 0) == 0;
}

/* The reset between invocations: returns the discard flag, or 0 if the environment may
 * serve again. The runtime is stopped first, so none of its threads can fork, listen or
 * write while we look; then anything else (a process it made before it stopped) discards,
 * then sockets and rlimits, then /tmp, then memory (what /tmp held is charged to the
 * sandbox until removed). Last, the runtime must still be the process we looked at. */
static uint32_t reset(struct sup *s, bool stopped)
{
	if (!stopped || s->broker.failed)
		return ZVIZ_RF_DISCARD_RESET;
	if (other_processes(s))
		return ZVIZ_RF_DISCARD_PROCESS;
	if (listening_sockets(s->re.runtime_pid))
		return ZVIZ_RF_DISCARD_SOCKET;
	char now[sizeof(s->re.limits)];
	ssize_t n = runtime_limits(s->re.runtime_pid, now, sizeof(now));
	if (n < 0 || (size_t)n != s->re.limits_len || memcmp(now, s->re.limits, (size_t)n) != 0)
		return ZVIZ_RF_DISCARD_RLIMIT;
	if ((s->spec.flags & ZV_SF_RESET_TMP) && !empty_tmp(s))
		return ZVIZ_RF_DISCARD_RESET;
	uint64_t used;
	if (zv_cg_memory_current(&s->cg, &used) &&
	    used > s->spec.limits.memory_bytes / 100u * MAX_KEPT_MEMORY_PERCENT)
		return ZVIZ_RF_DISCARD_MEMORY;
	/* Still stopped: a process gone before the check above may have sent it SIGCONT; no
	 * process but init is left that could now. */
	if (!all_threads_stopped(s->re.runtime_pid))
		return ZVIZ_RF_DISCARD_PROCESS;
	return runtime_alive(s) ? 0 : ZVIZ_RF_DISCARD_RESET;
}

/* Before the first GO: which process is the runtime (held by a pidfd), and its rlimits
 * as it booted. */
static void learn_runtime(struct sup *s)
{
	s->re.runtime_pid = find_runtime(s);
	if (s->re.runtime_pid > 0)
		s->re.runtime_pidfd = (int)syscall(SYS_pidfd_open, s->re.runtime_pid, 0);
	ssize_t n = s->re.runtime_pidfd >= 0 ? runtime_limits(s->re.runtime_pid, s->re.limits, sizeof(s->re.limits)) : -1;
	s->re.limits_len = n > 0 ? (size_t)n : 0;
	/* Parked until its first GO like between any two (see zv_reuse_serve). */
	if (n <= 0 || !stop_runtime(s))
		s->re.runtime_pid = 0; /* cannot be checked: serves once, then is discarded */
}

/* What the runtime wrote after its answer, before it stopped, belongs to no invocation. */
static void discard_pending(int fd)
{
	uint8_t scratch[4096];
	if (fd >= 0)
		while (read(fd, scratch, sizeof(scratch)) > 0)
			;
}

/* Resets what one invocation leaves in struct sup, so the next starts from nothing. The
 * first starts from what the boot left: its stdout and stderr, and what ended it (a limit). */
static void clear_invocation(struct sup *s, bool first)
{
	uint32_t boot_flags = first ? s->res.flags : 0;
	memset(&s->res, 0, sizeof(s->res));
	s->res.flags = boot_flags;
	if (!first) {
		s->out.len = s->err.len = 0;
		s->out.truncated = s->err.truncated = false;
	}
	s->reply.len = 0;
	s->reply.truncated = false;
	s->naudit = 0;
	s->answered = false;
	s->spec.stream = false;
	s->spec.log_bytes = 0;
	s->output.total = 0;
	s->output.send_failed = false;
	s->spec.stdin_len = 0;
	s->spec.stdin_data = NULL;
	free(s->go_buf);
	s->go_buf = NULL;
	if (s->budget_fd >= 0)
		close(s->budget_fd);
	s->budget_fd = -1;
}

/* The work as the runtime reads it: a u32 little-endian length, then the bytes. */
static int frame_control(struct sup *s, struct zviz_error *err)
{
	size_t len = s->ctl.len;
	uint8_t *f = realloc(s->re.frame, len + 4);
	if (!f)
		return zv_fail(err, ZVIZ_E_SYSTEM, ENOMEM, "allocate a control frame of %zu bytes", len + 4);
	s->re.frame = f;
	f[0] = (uint8_t)len;
	f[1] = (uint8_t)(len >> 8);
	f[2] = (uint8_t)(len >> 16);
	f[3] = (uint8_t)(len >> 24);
	if (len)
		memcpy(f + 4, s->ctl.data, len);
	s->ctl.data = f;
	s->ctl.len = len + 4;
	s->ctl.off = 0;
	s->ctl.keep = true;
	return 0;
}

/* The answer without its frame header; a reply that is not exactly one frame is not an
 * answer this protocol allows, and the environment is not trusted to serve again. */
static bool unframe_reply(struct sup *s)
{
	if (!s->answered || s->reply.len < 4) {
		s->reply.len = 0;
		return false;
	}
	uint32_t n = zv_u32le(s->reply.data);
	bool exact = s->reply.len - 4 == n;
	memmove(s->reply.data, s->reply.data + 4, n);
	s->reply.len = n;
	return exact;
}

/* What ends an environment whatever the reset finds: the invocation itself went wrong. */
static bool invocation_failed(const struct sup *s)
{
	const uint32_t bad = ZVIZ_RF_TIMED_OUT | ZVIZ_RF_OOM_KILLED | ZVIZ_RF_PIDS_LIMITED | ZVIZ_RF_SIGNALED |
			     ZVIZ_RF_KILLED_BY_CALLER | ZVIZ_RF_OUTPUT_LIMIT | ZVIZ_RF_BROKER_DIED |
			     ZVIZ_RF_SECCOMP_KILLED | ZVIZ_RF_TRUSTED_CPU | ZVIZ_RF_STDOUT_TRUNCATED |
			     ZVIZ_RF_STDERR_TRUNCATED;
	return (s->res.flags & bad) != 0 || s->init_reaped || s->got_exit;
}

int zv_reuse_serve(struct sup *s, struct zviz_error *err)
{
	learn_runtime(s);
	for (;;) {
		bool first = s->re.invocations == 0;
		clear_invocation(s, first);
		if (zv_sup_wait_for_go(s, err) < 0) {
			/* EOF while parked is how the caller discards an idle environment. */
			if (err->code != ZVIZ_E_PROTOCOL)
				zv_send_frame(CTL_FD, ZV_FRAME_ERROR, err, sizeof(*err));
			return 0;
		}
		int r;
		if ((r = zv_sup_apply_go(s, err)) < 0 || (r = frame_control(s, err)) < 0 ||
		    (r = zv_sup_start_trusted_accounting(s, err)) < 0) {
			zv_send_frame(CTL_FD, ZV_FRAME_ERROR, err, sizeof(*err));
			return r;
		}
		if (!first) {
			discard_pending(s->out.fd);
			discard_pending(s->err.fd);
		}
		discard_pending(s->reply.fd);
		/* The runtime runs only within an invocation (and its boot, the first's). */
		if (s->re.runtime_pidfd >= 0 && !continue_runtime(s))
			s->re.runtime_pid = 0; /* gone while parked: this invocation fails, and discards */
		/* The audit is this invocation's: the decisions for earlier ones are not. */
		zv_broker_audit_mark(&s->broker);
		s->re.peak_resettable = zv_cg_peak_reset(&s->cg, &s->re.peak_fd);
		s->kmsg_fd = zv_kmsg_open();
		s->started_ns = zv_now_ns();
		s->running = true;
		bool alive = zv_sup_loop(s, false);
		s->running = false;
		/* The answer is in: stop the runtime before reading what the invocation cost, so
		 * nothing it does after is charged to nobody, and keep it stopped while parked. */
		bool stopped = alive && s->answered && s->re.runtime_pid > 0 && stop_runtime(s);
		bool framed = unframe_reply(s);
		zv_sup_finish_result(s);
		/* The invocation's own CPU and peak, not the environment's: what the cgroup counted
		 * since the earlier invocations' share (the boot included in the first's, init's
		 * crumbs while parked in the next's), so each nanosecond is charged once. */
		uint64_t cpu_total = s->res.cpu_ns;
		s->res.cpu_ns = cpu_total > s->re.cpu_charged ? cpu_total - s->re.cpu_charged : 0;
		s->re.cpu_charged = cpu_total > s->re.cpu_charged ? cpu_total : s->re.cpu_charged;
		uint64_t peak;
		if (s->re.peak_resettable && zv_cg_peak_read(&s->cg, s->re.peak_fd, &peak))
			s->res.memory_peak_bytes = peak;
		else
			s->res.flags |= ZVIZ_RF_PEAK_ENV;
		s->re.invocations++;
		if (alive && !invocation_failed(s)) {
			/* The reset runs as host root for this invocation (wiping /tmp can be long):
			 * its CPU is the invocation's trusted CPU too. */
			uint64_t before = zv_self_cpu_ns();
			uint32_t discard = !framed || s->re.runtime_pid <= 0 ? ZVIZ_RF_DISCARD_RESET : reset(s, stopped);
			uint64_t after = zv_self_cpu_ns();
			s->res.trusted_cpu_ns += after > before ? after - before : 0;
			struct zviz_error ignored;
			if (!discard && zv_sup_arm_timer(s, 0, &ignored) < 0)
				discard = ZVIZ_RF_DISCARD_RESET;
			s->res.flags |= discard ? discard : ZVIZ_RF_REUSABLE;
		}
		/* The boot's trusted CPU was the first invocation's; the next counts from its GO. */
		s->charging = false;
		if (alive)
			zv_sup_send_result(s);
		if (!alive || !(s->res.flags & ZVIZ_RF_REUSABLE))
			return 0;
	}
}
