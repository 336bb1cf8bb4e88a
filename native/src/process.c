/* process.c — layer A: what the function's process inherits — rlimits, stdio, and
 * nothing else of ours. Runs in the child; only async-signal-safe calls. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

static int set_limit(int res, rlim_t v, const char *name, struct zviz_error *err)
{
	struct rlimit rl = { .rlim_cur = v, .rlim_max = v };
	if (setrlimit(res, &rl) < 0)
		return zv_fail(err, ZVIZ_E_CAPS, errno, "setrlimit %s to %llu", name, (unsigned long long)v);
	return 0;
}

int zv_proc_set_rlimits(const struct zv_limits *l, struct zviz_error *err)
{
	int r;
	/* No core files: a crashing function must not write its memory anywhere. */
	if ((r = set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE", err)) < 0)
		return r;
	if ((r = set_limit(RLIMIT_NOFILE, (rlim_t)l->nofile, "RLIMIT_NOFILE", err)) < 0)
		return r;
	return set_limit(RLIMIT_FSIZE, (rlim_t)l->fsize_bytes, "RLIMIT_FSIZE", err);
}

int zv_proc_stdio(int in, int out, int errfd, struct zviz_error *err)
{
	/* dup2 clears O_CLOEXEC on the copies; the originals keep it and die at execve. */
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(errfd, 2) < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "set up stdio");
	return 0;
}

int zv_proc_close_fds_from(int lowest, const int *keep, size_t nkeep, struct zviz_error *err)
{
	/* Close every fd >= lowest except those in keep (sorted ascending). */
	int from = lowest;
	for (size_t i = 0; i <= nkeep; i++) {
		int to = i < nkeep ? keep[i] - 1 : ~0;
		if (to >= from && syscall(SYS_close_range, (unsigned)from, (unsigned)to, 0) < 0)
			return zv_fail(err, ZVIZ_E_SYSTEM, errno, "close fds %d..%d", from, to);
		if (i < nkeep)
			from = keep[i] + 1;
	}
	return 0;
}

int zv_proc_place(int src, int dst, struct zviz_error *err)
{
	/* dup2 onto a fixed number; the copy loses O_CLOEXEC and survives execve. */
	if (dup2(src, dst) < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "place fd %d at %d", src, dst);
	return 0;
}

int zv_proc_write_sysctl(const char *path, const char *value, struct zviz_error *err)
{
	return zv_write_text(path, value, ZVIZ_E_NAMESPACE, err);
}
