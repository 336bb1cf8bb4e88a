/* cgroup.c — layer D: one cgroup per sandbox, on v2 (unified) or v1 (per controller).
 *
 * The server decides where (beneath its own cgroup, in a `zviz` folder; never at the
 * root of a hierarchy) and passes the parent directories in the spec. Here we create
 * `<parent>/zviz-<id>`, write the limits before any code of the function runs, read the
 * accounting after it ends, kill everything in it, and remove it.
 *
 * Why limits are written before the process enters: a fork bomb or an allocation in
 * the first microseconds must already meet pids.max and memory.max. On v2 the child is
 * born inside (CLONE_INTO_CGROUP); on v1 the supervisor writes the pid into every
 * controller's cgroup.procs before it releases the child from its first sync point. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

#define CPU_PERIOD_US 100000ull

static int write_at(int dirfd, const char *file, const char *text, const char *where, struct zviz_error *err)
{
	int fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return zv_fail(err, ZVIZ_E_CGROUP, errno, "open `%s/%s`", where, file);
	size_t len = strlen(text);
	ssize_t n = write(fd, text, len);
	int e = errno;
	close(fd);
	if (n != (ssize_t)len)
		return zv_fail(err, ZVIZ_E_CGROUP, n < 0 ? e : EIO, "write `%s` to `%s/%s`", text, where, file);
	return 0;
}

static bool has_file(int dirfd, const char *file)
{
	return faccessat(dirfd, file, F_OK, 0) == 0;
}

/* Reads a small file into buf (NUL-terminated). Returns length or -1. */
ssize_t zv_read_small(int dirfd, const char *file, char *buf, size_t cap)
{
	int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = 0;
	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

static bool read_u64(int dirfd, const char *file, uint64_t *out)
{
	char buf[64];
	if (zv_read_small(dirfd, file, buf, sizeof(buf)) <= 0)
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(buf, &end, 10);
	if (errno || end == buf)
		return false;
	*out = v;
	return true;
}

/* Value of `key N` in a flat keyed file (memory.events, cpu.stat, pids.events, ...). */
static bool read_key(int dirfd, const char *file, const char *key, uint64_t *out)
{
	char buf[4096];
	if (zv_read_small(dirfd, file, buf, sizeof(buf)) <= 0)
		return false;
	size_t klen = strlen(key);
	for (char *line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
			*out = strtoull(line + klen + 1, NULL, 10);
			return true;
		}
	}
	return false;
}

/* The directory serving `controller`. A v1 hierarchy may carry several controllers
 * (`cpu,cpuacct`), named as a comma-separated list. */
static struct zv_cg_dir *find(struct zv_cgroup *cg, const char *controller)
{
	size_t want = strlen(controller);
	for (size_t i = 0; i < cg->n; i++) {
		for (const char *p = cg->dir[i].controller; *p;) {
			size_t len = strcspn(p, ",");
			if (len == want && strncmp(p, controller, len) == 0)
				return &cg->dir[i];
			p += len;
			if (*p == ',')
				p++;
		}
	}
	return NULL;
}

int zv_cg_make_dirs(struct zv_cgroup *cg, const struct zv_spec *s, struct zviz_error *err)
{
	memset(cg, 0, sizeof(*cg));
	cg->version = s->cgroup_version;
	for (size_t i = 0; i < s->ncgroups; i++) {
		struct zv_cg_dir *d = &cg->dir[cg->n];
		d->dirfd = -1;
		snprintf(d->controller, sizeof(d->controller), "%s", s->cgroups[i].controller);
		int n = snprintf(d->path, sizeof(d->path), "%s/zviz-%s", s->cgroups[i].parent, s->id);
		if (n < 0 || (size_t)n >= sizeof(d->path))
			return zv_fail(err, ZVIZ_E_CGROUP, ENAMETOOLONG, "cgroup path under `%.200s`", s->cgroups[i].parent);
		/* The `zviz` parent may not exist yet (first sandbox, or swept): make it. */
		if (mkdir(s->cgroups[i].parent, 0755) < 0 && errno != EEXIST)
			return zv_fail(err, ZVIZ_E_CGROUP, errno, "mkdir `%s`", s->cgroups[i].parent);
		if (mkdir(d->path, 0755) < 0)
			return zv_fail(err, ZVIZ_E_CGROUP, errno, "mkdir `%s`", d->path);
		cg->n++;
		d->dirfd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d->dirfd < 0)
			return zv_fail(err, ZVIZ_E_CGROUP, errno, "open `%s`", d->path);
	}
	return 0;
}

int zv_cg_apply_limits(struct zv_cgroup *cg, const struct zv_limits *l, struct zviz_error *err)
{
	char v[64];
	int r;
	unsigned long long quota = (unsigned long long)l->cpu_millis * CPU_PERIOD_US / 1000ull;
	if (quota < 1000)
		quota = 1000; /* the kernel's minimum quota is 1 ms */
	struct zv_cg_dir *d;

	if (cg->version == 2) {
		if (!(d = find(cg, "unified")))
			return zv_fail(err, ZVIZ_E_CGROUP, 0, "cgroup v2: no unified parent in spec");
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->memory_bytes);
		if ((r = write_at(d->dirfd, "memory.max", v, d->path, err)) < 0)
			return r;
		/* No swap escape: swap is not memory the limit would see. */
		if (has_file(d->dirfd, "memory.swap.max") && (r = write_at(d->dirfd, "memory.swap.max", "0", d->path, err)) < 0)
			return r;
		/* An OOM kills the whole invocation, not one random process of it. */
		if (has_file(d->dirfd, "memory.oom.group") &&
		    (r = write_at(d->dirfd, "memory.oom.group", "1", d->path, err)) < 0)
			return r;
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->pids);
		if ((r = write_at(d->dirfd, "pids.max", v, d->path, err)) < 0)
			return r;
		if (!has_file(d->dirfd, "cpu.max"))
			return 0; /* no cpu controller delegated: reported by the host probe */
		snprintf(v, sizeof(v), "%llu %llu", quota, CPU_PERIOD_US);
		return write_at(d->dirfd, "cpu.max", v, d->path, err);
	}

	if ((d = find(cg, "memory"))) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->memory_bytes);
		/* memsw is memory + swap: the same value means no swap at all. The kernel wants
		 * memsw >= memory at every moment, so a raise (a warm sandbox claimed with more
		 * memory than it was made with) writes memsw first, a cut writes it last. */
		bool memsw = has_file(d->dirfd, "memory.memsw.limit_in_bytes");
		uint64_t current = 0;
		bool raise = read_u64(d->dirfd, "memory.limit_in_bytes", &current) && l->memory_bytes > current;
		if (memsw && raise && (r = write_at(d->dirfd, "memory.memsw.limit_in_bytes", v, d->path, err)) < 0)
			return r;
		if ((r = write_at(d->dirfd, "memory.limit_in_bytes", v, d->path, err)) < 0)
			return r;
		if (memsw && !raise && (r = write_at(d->dirfd, "memory.memsw.limit_in_bytes", v, d->path, err)) < 0)
			return r;
	}
	if ((d = find(cg, "pids"))) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->pids);
		if ((r = write_at(d->dirfd, "pids.max", v, d->path, err)) < 0)
			return r;
	}
	if ((d = find(cg, "cpu"))) {
		snprintf(v, sizeof(v), "%llu", CPU_PERIOD_US);
		if ((r = write_at(d->dirfd, "cpu.cfs_period_us", v, d->path, err)) < 0)
			return r;
		snprintf(v, sizeof(v), "%llu", quota);
		if ((r = write_at(d->dirfd, "cpu.cfs_quota_us", v, d->path, err)) < 0)
			return r;
	}
	return 0;
}

int zv_cg_create(struct zv_cgroup *cg, const struct zv_spec *s, struct zviz_error *err)
{
	int r = zv_cg_make_dirs(cg, s, err);
	if (r == 0)
		r = zv_cg_apply_limits(cg, &s->limits, err);
	if (r < 0) {
		struct zviz_error ignored;
		zv_cg_destroy(cg, &ignored);
	}
	return r;
}

int zv_cg_clone_fd(const struct zv_cgroup *cg)
{
	return cg->version == 2 && cg->n > 0 ? cg->dir[0].dirfd : -1;
}

int zv_cg_attach(struct zv_cgroup *cg, pid_t pid, struct zviz_error *err)
{
	char v[32];
	snprintf(v, sizeof(v), "%d", (int)pid);
	for (size_t i = 0; i < cg->n; i++) {
		int r = write_at(cg->dir[i].dirfd, "cgroup.procs", v, cg->dir[i].path, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* SIGKILLs every pid listed in dirfd's cgroup.procs. Returns how many were listed. */
static int kill_listed(int dirfd)
{
	char buf[65536];
	if (zv_read_small(dirfd, "cgroup.procs", buf, sizeof(buf)) <= 0)
		return 0;
	int count = 0;
	for (char *p = buf; *p;) {
		char *end;
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid > 1)
			kill((pid_t)pid, SIGKILL);
		count++;
		p = end;
		while (*p == '\n')
			p++;
	}
	return count;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = ms * 1000000L };
	nanosleep(&ts, NULL);
}

void zv_cg_kill(struct zv_cgroup *cg)
{
	if (cg->n == 0)
		return;
	if (cg->version == 2) {
		struct zv_cg_dir *d = &cg->dir[0];
		struct zviz_error ignored;
		if (has_file(d->dirfd, "cgroup.kill") && write_at(d->dirfd, "cgroup.kill", "1", d->path, &ignored) == 0)
			return;
		for (int i = 0; i < 50 && kill_listed(d->dirfd) > 0; i++)
			sleep_ms(2);
		return;
	}
	/* v1: freeze first, so nothing can fork while we walk the list; kill everyone;
	 * thaw so the SIGKILLs are delivered. */
	struct zv_cg_dir *fz = find(cg, "freezer");
	struct zv_cg_dir *any = fz ? fz : find(cg, "pids");
	if (!any)
		any = &cg->dir[0];
	struct zviz_error ignored;
	if (fz) {
		write_at(fz->dirfd, "freezer.state", "FROZEN", fz->path, &ignored);
		char st[32];
		for (int i = 0; i < 200; i++) {
			if (zv_read_small(fz->dirfd, "freezer.state", st, sizeof(st)) > 0 && strncmp(st, "FROZEN", 6) == 0)
				break;
			sleep_ms(1);
		}
	}
	kill_listed(any->dirfd);
	if (fz)
		write_at(fz->dirfd, "freezer.state", "THAWED", fz->path, &ignored);
	for (int i = 0; i < 100 && kill_listed(any->dirfd) > 0; i++)
		sleep_ms(2);
}

bool zv_cg_counts_cpu(struct zv_cgroup *cg)
{
	/* v2: cpu.stat is a core file, there without the cpu controller. */
	return (cg->version == 2 && find(cg, "unified")) || (cg->version == 1 && find(cg, "cpuacct"));
}

void zv_cg_stats(struct zv_cgroup *cg, struct zviz_result *r)
{
	uint64_t v;
	struct zv_cg_dir *d;
	if (cg->version == 2 && (d = find(cg, "unified"))) {
		if (read_key(d->dirfd, "cpu.stat", "usage_usec", &v))
			r->cpu_ns = v * 1000ull;
		if (read_u64(d->dirfd, "memory.peak", &v))
			r->memory_peak_bytes = v;
		if (read_key(d->dirfd, "memory.events", "oom_kill", &v))
			r->oom_kills = v;
		if (read_key(d->dirfd, "pids.events", "max", &v) && v > 0)
			r->flags |= ZVIZ_RF_PIDS_LIMITED;
	} else if (cg->version == 1) {
		if ((d = find(cg, "cpuacct")) && read_u64(d->dirfd, "cpuacct.usage", &v))
			r->cpu_ns = v;
		if ((d = find(cg, "memory"))) {
			if (read_u64(d->dirfd, "memory.max_usage_in_bytes", &v))
				r->memory_peak_bytes = v;
			if (read_key(d->dirfd, "memory.oom_control", "oom_kill", &v))
				r->oom_kills = v;
		}
		if ((d = find(cg, "pids")) && read_key(d->dirfd, "pids.events", "max", &v) && v > 0)
			r->flags |= ZVIZ_RF_PIDS_LIMITED;
	}
	if (r->oom_kills > 0)
		r->flags |= ZVIZ_RF_OOM_KILLED;
}

int zv_cg_destroy(struct zv_cgroup *cg, struct zviz_error *err)
{
	int rc = 0;
	for (size_t i = cg->n; i-- > 0;) {
		struct zv_cg_dir *d = &cg->dir[i];
		if (d->dirfd >= 0)
			close(d->dirfd);
		d->dirfd = -1;
		/* Dying tasks keep a cgroup busy for a moment after SIGKILL. */
		int e = 0;
		for (int tries = 0; tries < 500; tries++) {
			if (rmdir(d->path) == 0 || errno == ENOENT) {
				e = 0;
				break;
			}
			e = errno;
			if (e != EBUSY)
				break;
			sleep_ms(2);
		}
		if (e != 0 && rc == 0)
			rc = zv_fail(err, ZVIZ_E_CGROUP, e, "rmdir `%s`", d->path);
	}
	cg->n = 0;
	return rc;
}

/* ---- Reusable environments (reuse.c): what one invocation of a kept sandbox used ---- */

/* The pids (as the host sees them) of the processes in the sandbox's cgroup; every
 * hierarchy lists all of them, so the first one will do. Returns how many, or -1. */
ssize_t zv_cg_procs(struct zv_cgroup *cg, pid_t *out, size_t cap)
{
	if (cg->n == 0 || cg->dir[0].dirfd < 0)
		return -1;
	char buf[16384];
	ssize_t len = zv_read_small(cg->dir[0].dirfd, "cgroup.procs", buf, sizeof(buf));
	if (len < 0 || (size_t)len + 1 >= sizeof(buf))
		return -1; /* unreadable, or more than fits: the caller discards either way */
	size_t n = 0;
	for (char *p = buf; *p;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p)
			break;
		if (n == cap)
			return -1;
		out[n++] = (pid_t)v;
		p = end;
		while (*p == '\n')
			p++;
	}
	return (ssize_t)n;
}

/* Starts a new memory peak for the next invocation. v1: writing to
 * memory.max_usage_in_bytes resets it to the current usage. v2: memory.peak resets
 * for the file descriptor it was written through (Linux 6.12+), so that descriptor is
 * kept in *peak_fd and read at the end. Returns false where the kernel cannot reset:
 * the peak then read is the environment's, from its start. */
bool zv_cg_peak_reset(struct zv_cgroup *cg, int *peak_fd)
{
	struct zv_cg_dir *d;
	if (cg->version == 2 && (d = find(cg, "unified"))) {
		if (*peak_fd < 0)
			*peak_fd = openat(d->dirfd, "memory.peak", O_RDWR | O_CLOEXEC);
		return *peak_fd >= 0 && write(*peak_fd, "reset\n", 6) == 6;
	}
	if (cg->version == 1 && (d = find(cg, "memory"))) {
		struct zviz_error ignored;
		return write_at(d->dirfd, "memory.max_usage_in_bytes", "0", d->path, &ignored) == 0;
	}
	return false;
}

/* The peak since zv_cg_peak_reset (v2 through its descriptor; v1 the reset file). */
bool zv_cg_peak_read(struct zv_cgroup *cg, int peak_fd, uint64_t *out)
{
	struct zv_cg_dir *d;
	if (cg->version == 2 && peak_fd >= 0) {
		char buf[64];
		ssize_t n = pread(peak_fd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			return false;
		buf[n] = '\0';
		*out = strtoull(buf, NULL, 10);
		return true;
	}
	if (cg->version == 1 && (d = find(cg, "memory")))
		return read_u64(d->dirfd, "memory.max_usage_in_bytes", out);
	return false;
}

/* Memory charged to the sandbox now (what a kept environment carries into its next invocation). */
bool zv_cg_memory_current(struct zv_cgroup *cg, uint64_t *out)
{
	struct zv_cg_dir *d;
	if (cg->version == 2 && (d = find(cg, "unified")))
		return read_u64(d->dirfd, "memory.current", out);
	if (cg->version == 1 && (d = find(cg, "memory")))
		return read_u64(d->dirfd, "memory.usage_in_bytes", out);
	return false;
}
