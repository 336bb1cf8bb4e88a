/* test_cgroup.c — the cgroup driver (src/cgroup.c) over a fake cgroupfs.
 *
 * No root and no real cgroup: the "hierarchies" are plain directories in a mkdtemp tree.
 * The driver only ever opens files that the kernel creates in a new cgroup, so each test
 * creates those files (empty) after zv_cg_make_dirs, as the kernel would, then checks
 * the exact bytes the driver wrote, or feeds it the accounting files the kernel would
 * fill. The spec is built by hand: the parser only accepts parents under /sys/fs/cgroup.
 *
 * Two tests put a real pid in a fake cgroup.procs: a child of this process that is never
 * reaped before the driver returns, so the pid cannot be reused by anything else. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"
#include "test_limits.h"

static int npass, nfail;
static char root[64];

ZV_PRINTF(2, 3) static void check(bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s ", ok ? "ok  " : "FAIL");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	if (ok)
		npass++;
	else
		nfail++;
}

/* Clears err before a call, so a message shown after it is that call's own. */
static struct zviz_error *fresh(struct zviz_error *err)
{
	memset(err, 0, sizeof(*err));
	return err;
}

/* ---- fake cgroupfs helpers ---------------------------------------------------------------- */

ZV_PRINTF(3, 4) static void pathf(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, cap, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap) {
		fprintf(stderr, "test-cgroup: path too long\n");
		abort();
	}
}

static void mkdirs(const char *path)
{
	char tmp[4096];
	pathf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(tmp, 0755);
			*p = '/';
		}
	}
	mkdir(tmp, 0755);
}

/* Creates or truncates dir/name with text (what the kernel shows, or an empty control file). */
static void put_file(const char *dir, const char *name, const char *text)
{
	char p[4096];
	pathf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		fprintf(stderr, "test-cgroup: write %s: %s\n", p, strerror(errno));
		abort();
	}
	close(fd);
}

static void touch_all(const char *dir, const char *const *names)
{
	for (size_t i = 0; names[i]; i++)
		put_file(dir, names[i], "");
}

static bool exists_at(const char *dir, const char *name)
{
	char p[4096];
	pathf(p, sizeof(p), "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

static bool dir_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Content of dir/name, or "(missing)". */
static const char *content(const char *dir, const char *name)
{
	static char buf[4096];
	char p[4096];
	pathf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return "(missing)";
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static void expect_content(const char *dir, const char *name, const char *want, const char *label)
{
	const char *got = content(dir, name);
	check(strcmp(got, want) == 0, "%s: %s is `%s` (got `%s`)", label, name, want, got);
}

/* Removes every regular file in dir (what rmdir on a real cgroup does not need). */
static void empty_dir(const char *dir)
{
	char cmd[4200];
	pathf(cmd, sizeof(cmd), "find '%s' -maxdepth 1 -type f -delete", dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "test-cgroup: %s failed\n", cmd);
		abort();
	}
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rm_tree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A spec naming only what the driver reads: id, cgroup version, parents, limits. */
struct fake_spec {
	struct zv_spec s;
	struct zv_cgroup_parent parents[ZV_MAX_CGROUPS];
	char ctrl[ZV_MAX_CGROUPS][32];
	char parent[ZV_MAX_CGROUPS][4096];
	char id[65];
};

static void fake_spec(struct fake_spec *f, const char *id, uint32_t version)
{
	memset(f, 0, sizeof(*f));
	pathf(f->id, sizeof(f->id), "%s", id);
	f->s.id = f->id;
	f->s.cgroup_version = version;
	f->s.cgroups = f->parents;
	f->s.limits = TEST_LIMITS;
}

/* Adds a hierarchy: its parent is <root>/<hier>/srv/zviz, and <root>/<hier>/srv exists
 * (the server's own cgroup); the `zviz` folder is left for the driver to make. */
static void add_parent(struct fake_spec *f, const char *controller, const char *hier)
{
	size_t i = f->s.ncgroups++;
	pathf(f->ctrl[i], sizeof(f->ctrl[i]), "%s", controller);
	char srv[4096];
	pathf(srv, sizeof(srv), "%s/%s/srv", root, hier);
	mkdirs(srv);
	pathf(f->parent[i], sizeof(f->parent[i]), "%s/zviz", srv);
	f->parents[i].controller = f->ctrl[i];
	f->parents[i].parent = f->parent[i];
}

/* Files the kernel makes in a new v2 cgroup with memory, pids and cpu enabled. */
static const char *const V2_FILES[] = { "memory.max", "memory.swap.max", "memory.oom.group", "pids.max", "cpu.max",
					"cgroup.procs", "cgroup.kill", "cpu.stat", "memory.peak", "memory.events",
					"pids.events", NULL };

/* A child that waits to be killed. Not reaped until the caller says so. */
static pid_t spawn_sleeper(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		for (;;)
			pause();
	}
	if (pid < 0) {
		perror("fork");
		abort();
	}
	return pid;
}

static bool reaped_by_sigkill(pid_t pid)
{
	int st;
	/* The driver has SIGKILLed it already; make sure we never hang if it did not. */
	for (int i = 0; i < 200; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
		usleep(5000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return false;
}

/* apply_limits with `file` (in `dir`) missing must fail with ZVIZ_E_CGROUP/ENOENT naming its path. */
static void expect_missing_fails(struct zv_cgroup *cg, const struct zv_limits *l, const char *dir, const char *file,
				 const char *label)
{
	struct zviz_error err;
	char p[4096];
	pathf(p, sizeof(p), "%s/%s", dir, file);
	unlink(p);
	int rc = zv_cg_apply_limits(cg, l, fresh(&err));
	check(rc == -ZVIZ_E_CGROUP && err.code == ZVIZ_E_CGROUP && err.sys_errno == ENOENT,
	      "%s without %s: ZVIZ_E_CGROUP/ENOENT (rc %d, code %d, errno %d)", label, file, rc, err.code, err.sys_errno);
	check(strstr(err.msg, p) != NULL, "%s without %s: message names `%s` (got `%s`)", label, file, p, err.msg);
}

/* What zv_cg_stats must read from the accounting files the kernel fills. */
struct stats_want {
	const char *label;
	unsigned long long cpu_ns, memory_peak_bytes, oom_kills;
	uint32_t flags;
};

static void expect_stats(struct zv_cgroup *cg, const struct stats_want *w)
{
	struct zviz_result r = { 0 };
	zv_cg_stats(cg, &r);
	check(r.cpu_ns == w->cpu_ns && r.memory_peak_bytes == w->memory_peak_bytes && r.oom_kills == w->oom_kills &&
		      r.flags == w->flags,
	      "%s: cpu_ns %llu, memory_peak_bytes %llu, oom_kills %llu, flags %#x (got %llu, %llu, %llu, %#x)", w->label,
	      w->cpu_ns, w->memory_peak_bytes, w->oom_kills, w->flags, (unsigned long long)r.cpu_ns,
	      (unsigned long long)r.memory_peak_bytes, (unsigned long long)r.oom_kills, r.flags);
}

/* ---- v2 ----------------------------------------------------------------------------------- */

static void test_v2(void)
{
	struct fake_spec f;
	struct zv_cgroup cg;
	struct zviz_error err = { 0 };
	fake_spec(&f, "4242-inv-v2", 2);
	add_parent(&f, "unified", "v2");

	int rc = zv_cg_make_dirs(&cg, &f.s, fresh(&err));
	check(rc == 0, "v2 make_dirs returns 0 (rc %d, `%s`)", rc, err.msg);
	char want_path[4096];
	pathf(want_path, sizeof(want_path), "%s/zviz-4242-inv-v2", f.parent[0]);
	check(dir_exists(f.parent[0]), "v2 make_dirs makes the missing `zviz` parent");
	check(dir_exists(want_path), "v2 make_dirs makes <parent>/zviz-<id>");
	check(cg.version == 2 && cg.n == 1, "v2 make_dirs records version 2 and one dir (version %u, n %zu)",
	      cg.version, cg.n);
	check(strcmp(cg.dir[0].path, want_path) == 0, "v2 dir path is `%s` (got `%s`)", want_path, cg.dir[0].path);
	check(strcmp(cg.dir[0].controller, "unified") == 0, "v2 dir controller is `unified`");
	check(cg.dir[0].dirfd >= 0, "v2 dir has an open dirfd");
	check(zv_cg_clone_fd(&cg) == cg.dir[0].dirfd, "v2 clone_fd is the cgroup's dirfd (for CLONE_INTO_CGROUP)");
	const char *d = cg.dir[0].path;

	touch_all(d, V2_FILES);
	rc = zv_cg_apply_limits(&cg, &f.s.limits, fresh(&err));
	check(rc == 0, "v2 apply_limits returns 0 (rc %d, `%s`)", rc, err.msg);
	expect_content(d, "memory.max", "268435456", "v2 limits");
	expect_content(d, "memory.swap.max", "0", "v2 limits");
	expect_content(d, "memory.oom.group", "1", "v2 limits");
	expect_content(d, "pids.max", "64", "v2 limits");
	expect_content(d, "cpu.max", "150000 100000", "v2 limits");

	/* cpu.max quota is cpu_millis * 100 over a 100 ms period, never below the kernel's 1 ms. */
	static const struct {
		uint64_t millis;
		const char *want;
	} quota[] = {
		{ 1, "1000 100000" },      { 5, "1000 100000" },       { 10, "1000 100000" },
		{ 11, "1100 100000" },     { 250, "25000 100000" },    { 1000, "100000 100000" },
		{ 64000, "6400000 100000" },
	};
	for (size_t i = 0; i < sizeof(quota) / sizeof(quota[0]); i++) {
		struct zv_limits l = f.s.limits;
		l.cpu_millis = quota[i].millis;
		touch_all(d, V2_FILES);
		rc = zv_cg_apply_limits(&cg, &l, fresh(&err));
		char label[64];
		pathf(label, sizeof(label), "v2 cpu_millis %llu", (unsigned long long)quota[i].millis);
		check(rc == 0, "%s: apply_limits returns 0", label);
		expect_content(d, "cpu.max", quota[i].want, label);
	}

	/* Older kernels lack memory.swap.max (no swap accounting) and memory.oom.group (< 4.19). */
	empty_dir(d);
	static const char *const v2_old[] = { "memory.max", "pids.max", "cpu.max", NULL };
	touch_all(d, v2_old);
	rc = zv_cg_apply_limits(&cg, &f.s.limits, fresh(&err));
	check(rc == 0, "v2 without memory.swap.max and memory.oom.group: apply_limits returns 0 (rc %d, `%s`)", rc,
	      err.msg);
	check(!exists_at(d, "memory.swap.max") && !exists_at(d, "memory.oom.group"),
	      "v2 without memory.swap.max and memory.oom.group: neither is created");
	expect_content(d, "memory.max", "268435456", "v2 old kernel");

	/* Without the cpu controller delegated (no cpu.max) there is no CPU quota, and no error:
	 * the host probe reports the controllers ZViz has. */
	empty_dir(d);
	static const char *const v2_nocpu[] = { "memory.max", "memory.swap.max", "memory.oom.group", "pids.max", NULL };
	touch_all(d, v2_nocpu);
	rc = zv_cg_apply_limits(&cg, &f.s.limits, fresh(&err));
	check(rc == 0 && !exists_at(d, "cpu.max"), "v2 without cpu.max: apply_limits returns 0 and creates none (rc %d, `%s`)",
	      rc, err.msg);

	/* Every mandatory file, missing on its own, fails with the path named. */
	static const char *const mandatory[] = { "memory.max", "pids.max" };
	for (size_t i = 0; i < 2; i++) {
		empty_dir(d);
		touch_all(d, V2_FILES);
		expect_missing_fails(&cg, &f.s.limits, d, mandatory[i], "v2");
	}

	/* Accounting. */
	empty_dir(d);
	touch_all(d, V2_FILES);
	put_file(d, "cpu.stat", "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 0\n");
	put_file(d, "memory.peak", "5242880\n");
	put_file(d, "memory.events", "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 1\n");
	put_file(d, "pids.events", "max 3\n");
	/* cpu from usage_usec, the peak, oom_kill (not oom), and both limit flags. */
	expect_stats(&cg, &(struct stats_want){ "v2 stats", 1234000, 5242880, 2, ZVIZ_RF_OOM_KILLED | ZVIZ_RF_PIDS_LIMITED });

	/* A quiet run: zero counters set no flag; newer keys that share a prefix are not read. */
	put_file(d, "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
	put_file(d, "pids.events", "max.imposed 5\nmax 0\n");
	expect_stats(&cg, &(struct stats_want){ "v2 stats, no OOM and pids.events max 0", 1234000, 5242880, 0, 0 });

	/* Missing accounting files leave the result as it was. */
	empty_dir(d);
	expect_stats(&cg, &(struct stats_want){ "v2 stats, missing files", 0, 0, 0, 0 });

	/* Kill: cgroup.kill where the kernel has it (5.14+). */
	touch_all(d, V2_FILES);
	zv_cg_kill(&cg);
	expect_content(d, "cgroup.kill", "1", "v2 kill");

	/* Older kernels: SIGKILL every pid in cgroup.procs until it is empty. */
	empty_dir(d);
	pid_t child = spawn_sleeper();
	char pidline[32];
	pathf(pidline, sizeof(pidline), "%d\n", (int)child);
	put_file(d, "cgroup.procs", pidline);
	zv_cg_kill(&cg);
	check(reaped_by_sigkill(child), "v2 kill without cgroup.kill SIGKILLs the pids in cgroup.procs");

	/* Destroy: a real cgroup dir has only virtual files; the fake one must be emptied. */
	empty_dir(d);
	put_file(d, "leftover", "x");
	rc = zv_cg_destroy(&cg, fresh(&err));
	check(rc == -ZVIZ_E_CGROUP && strstr(err.msg, want_path) != NULL,
	      "v2 destroy of a dir it cannot remove: ZVIZ_E_CGROUP naming it (rc %d, `%s`)", rc, err.msg);
	check(cg.n == 0, "v2 destroy forgets the dirs even on failure");
	/* Second life: empty it, make it again (as a new sandbox would), destroy it cleanly. */
	{
		char p[4096];
		pathf(p, sizeof(p), "%s/leftover", want_path);
		unlink(p);
	}
	rmdir(want_path);
	rc = zv_cg_make_dirs(&cg, &f.s, fresh(&err));
	check(rc == 0, "v2 make_dirs again after the dir is gone (rc %d, `%s`)", rc, err.msg);
	rc = zv_cg_destroy(&cg, fresh(&err));
	check(rc == 0, "v2 destroy returns 0 (rc %d, `%s`)", rc, err.msg);
	check(!dir_exists(want_path), "v2 destroy removes <parent>/zviz-<id>");
	check(dir_exists(f.parent[0]), "v2 destroy leaves the `zviz` parent");
	check(zv_cg_destroy(&cg, fresh(&err)) == 0, "v2 destroy twice is a no-op");
}

static void test_v2_errors(void)
{
	struct fake_spec f;
	struct zv_cgroup cg;
	struct zviz_error err = { 0 };
	int rc;

	/* The sandbox dir already exists (an id reused): refuse, never share a cgroup. */
	fake_spec(&f, "dup", 2);
	add_parent(&f, "unified", "v2e");
	rc = zv_cg_make_dirs(&cg, &f.s, fresh(&err));
	check(rc == 0, "v2 make_dirs for `dup` (rc %d)", rc);
	struct zv_cgroup cg2;
	rc = zv_cg_make_dirs(&cg2, &f.s, fresh(&err));
	check(rc == -ZVIZ_E_CGROUP && err.sys_errno == EEXIST && strstr(err.msg, "zviz-dup") != NULL,
	      "v2 make_dirs of an existing sandbox dir: ZVIZ_E_CGROUP/EEXIST naming it (`%s`)", err.msg);
	zv_cg_destroy(&cg2, fresh(&err));
	zv_cg_destroy(&cg, fresh(&err));

	/* The server's own cgroup is gone: the driver makes only the `zviz` level. */
	fake_spec(&f, "orphan", 2);
	add_parent(&f, "unified", "v2e");
	char gone[4096];
	pathf(gone, sizeof(gone), "%s/v2e/no-such-server/zviz", root);
	f.parents[0].parent = gone;
	rc = zv_cg_make_dirs(&cg, &f.s, fresh(&err));
	check(rc == -ZVIZ_E_CGROUP && err.sys_errno == ENOENT && strstr(err.msg, gone) != NULL,
	      "v2 make_dirs under a missing server cgroup: ZVIZ_E_CGROUP/ENOENT naming the parent (`%s`)", err.msg);
	zv_cg_destroy(&cg, fresh(&err));

	/* A v2 spec whose parent is not `unified`. */
	fake_spec(&f, "nounified", 2);
	add_parent(&f, "memory", "v2e");
	rc = zv_cg_make_dirs(&cg, &f.s, fresh(&err));
	rc = zv_cg_apply_limits(&cg, &f.s.limits, fresh(&err));
	check(rc == -ZVIZ_E_CGROUP && strstr(err.msg, "unified") != NULL,
	      "v2 apply_limits without a `unified` parent: ZVIZ_E_CGROUP (`%s`)", err.msg);
	zv_cg_destroy(&cg, fresh(&err));

	/* zv_cg_create: limits that cannot be written leave nothing behind. */
	fake_spec(&f, "create-fails", 2);
	add_parent(&f, "unified", "v2e");
	rc = zv_cg_create(&cg, &f.s, fresh(&err));
	char p[4096];
	pathf(p, sizeof(p), "%s/zviz-create-fails", f.parent[0]);
	check(rc == -ZVIZ_E_CGROUP && strstr(err.msg, "memory.max") != NULL,
	      "v2 create without memory.max fails naming it (rc %d, `%s`)", rc, err.msg);
	check(!dir_exists(p) && cg.n == 0, "v2 create that fails removes the dir it made");
}

/* ---- v1 ----------------------------------------------------------------------------------- */

static const char *const V1_MEMORY[] = { "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "cgroup.procs",
					 "memory.max_usage_in_bytes", "memory.oom_control", NULL };
static const char *const V1_PIDS[] = { "pids.max", "pids.events", "cgroup.procs", NULL };
static const char *const V1_CPU[] = { "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpuacct.usage", "cgroup.procs", NULL };
static const char *const V1_FREEZER[] = { "freezer.state", "cgroup.procs", NULL };

static void v1_touch(struct zv_cgroup *cg)
{
	static const char *const *const sets[] = { V1_MEMORY, V1_PIDS, V1_CPU, V1_FREEZER };
	for (size_t i = 0; i < cg->n; i++) {
		empty_dir(cg->dir[i].path);
		touch_all(cg->dir[i].path, sets[i]);
	}
}

static void test_v1(void)
{
	struct fake_spec f;
	struct zv_cgroup cg;
	struct zviz_error err = { 0 };
	fake_spec(&f, "4242-inv-v1", 1);
	add_parent(&f, "memory", "memory");
	add_parent(&f, "pids", "pids");
	add_parent(&f, "cpu,cpuacct", "cpu,cpuacct"); /* co-mounted: one hierarchy, one dir */
	add_parent(&f, "freezer", "freezer");

	int rc = zv_cg_make_dirs(&cg, &f.s, fresh(&err));
	check(rc == 0, "v1 make_dirs returns 0 (rc %d, `%s`)", rc, err.msg);
	check(cg.version == 1 && cg.n == 4, "v1 make_dirs makes one dir per hierarchy (version %u, n %zu)", cg.version,
	      cg.n);
	for (size_t i = 0; i < cg.n; i++) {
		char want[4096];
		pathf(want, sizeof(want), "%s/zviz-4242-inv-v1", f.parent[i]);
		check(strcmp(cg.dir[i].path, want) == 0 && dir_exists(want) && cg.dir[i].dirfd >= 0,
		      "v1 dir %zu is `%s` and open", i, want);
	}
	check(strcmp(cg.dir[2].controller, "cpu,cpuacct") == 0, "v1 co-mounted dir keeps the controller list");
	check(zv_cg_clone_fd(&cg) == -1, "v1 clone_fd is -1 (no CLONE_INTO_CGROUP on v1)");
	const char *mem = cg.dir[0].path, *pids = cg.dir[1].path, *cpu = cg.dir[2].path, *frz = cg.dir[3].path;

	v1_touch(&cg);
	rc = zv_cg_apply_limits(&cg, &f.s.limits, fresh(&err));
	check(rc == 0, "v1 apply_limits returns 0 (rc %d, `%s`)", rc, err.msg);
	expect_content(mem, "memory.limit_in_bytes", "268435456", "v1 limits");
	expect_content(mem, "memory.memsw.limit_in_bytes", "268435456", "v1 limits (memsw = memory: no swap)");
	expect_content(pids, "pids.max", "64", "v1 limits");
	expect_content(cpu, "cpu.cfs_period_us", "100000", "v1 limits (co-mounted cpu,cpuacct)");
	expect_content(cpu, "cpu.cfs_quota_us", "150000", "v1 limits (co-mounted cpu,cpuacct)");
	expect_content(frz, "freezer.state", "", "v1 limits (freezer untouched)");

	struct zv_limits small = f.s.limits;
	small.cpu_millis = 3;
	v1_touch(&cg);
	rc = zv_cg_apply_limits(&cg, &small, fresh(&err));
	expect_content(cpu, "cpu.cfs_quota_us", "1000", "v1 cpu_millis 3 (kernel minimum 1 ms)");

	/* Without swap accounting the memsw file does not exist: skip it, do not create it. */
	v1_touch(&cg);
	char p[4096];
	pathf(p, sizeof(p), "%s/memory.memsw.limit_in_bytes", mem);
	unlink(p);
	rc = zv_cg_apply_limits(&cg, &f.s.limits, fresh(&err));
	check(rc == 0, "v1 without memory.memsw.limit_in_bytes: apply_limits returns 0 (rc %d, `%s`)", rc, err.msg);
	check(!exists_at(mem, "memory.memsw.limit_in_bytes"), "v1 without memsw: the file is not created");
	expect_content(mem, "memory.limit_in_bytes", "268435456", "v1 without memsw");

	/* Every mandatory file, missing on its own, fails with the path named. */
	static const struct {
		int dir;
		const char *file;
	} mandatory[] = {
		{ 0, "memory.limit_in_bytes" },
		{ 1, "pids.max" },
		{ 2, "cpu.cfs_period_us" },
		{ 2, "cpu.cfs_quota_us" },
	};
	for (size_t i = 0; i < sizeof(mandatory) / sizeof(mandatory[0]); i++) {
		v1_touch(&cg);
		expect_missing_fails(&cg, &f.s.limits, cg.dir[mandatory[i].dir].path, mandatory[i].file, "v1");
	}

	/* Accounting. */
	v1_touch(&cg);
	put_file(cpu, "cpuacct.usage", "987654321\n");
	put_file(mem, "memory.max_usage_in_bytes", "7340032\n");
	put_file(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
	put_file(pids, "pids.events", "max 3\n");
	/* cpu from cpuacct.usage, the peak from max_usage, oom_kill (not oom_kill_disable), both flags. */
	expect_stats(&cg, &(struct stats_want){ "v1 stats", 987654321, 7340032, 1, ZVIZ_RF_OOM_KILLED | ZVIZ_RF_PIDS_LIMITED });

	put_file(mem, "memory.oom_control", "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n");
	put_file(pids, "pids.events", "max 0\n");
	expect_stats(&cg, &(struct stats_want){ "v1 stats, oom_kill 0 and max 0", 987654321, 7340032, 0, 0 });

	/* Attach and kill, with a real child standing in for the sandbox's init. */
	v1_touch(&cg);
	pid_t child = spawn_sleeper();
	char want[32];
	pathf(want, sizeof(want), "%d", (int)child);
	rc = zv_cg_attach(&cg, child, fresh(&err));
	check(rc == 0, "v1 attach returns 0 (rc %d, `%s`)", rc, err.msg);
	for (size_t i = 0; i < cg.n; i++) {
		char label[64];
		pathf(label, sizeof(label), "v1 attach (%s)", cg.dir[i].controller);
		expect_content(cg.dir[i].path, "cgroup.procs", want, label);
	}
	/* The fake freezer.state does not change by itself; the driver reads back what it wrote. */
	zv_cg_kill(&cg);
	check(reaped_by_sigkill(child), "v1 kill SIGKILLs the pids listed in the freezer's cgroup.procs");
	expect_content(frz, "freezer.state", "THAWED", "v1 kill (frozen, killed, thawed)");

	/* Attach fails, naming the path, when a hierarchy's cgroup.procs is missing. */
	v1_touch(&cg);
	pathf(p, sizeof(p), "%s/cgroup.procs", pids);
	unlink(p);
	rc = zv_cg_attach(&cg, 4242, fresh(&err));
	check(rc == -ZVIZ_E_CGROUP && strstr(err.msg, p) != NULL, "v1 attach without cgroup.procs: ZVIZ_E_CGROUP naming `%s` (`%s`)",
	      p, err.msg);

	/* Destroy removes every hierarchy's dir. */
	for (size_t i = 0; i < cg.n; i++)
		empty_dir(cg.dir[i].path);
	char dirs[4][4096];
	for (size_t i = 0; i < 4; i++)
		pathf(dirs[i], sizeof(dirs[i]), "%s", cg.dir[i].path);
	rc = zv_cg_destroy(&cg, fresh(&err));
	check(rc == 0, "v1 destroy returns 0 (rc %d, `%s`)", rc, err.msg);
	for (size_t i = 0; i < 4; i++)
		check(!dir_exists(dirs[i]), "v1 destroy removes `%s`", dirs[i]);
}

/* This host's layout: cpu and cpuacct mounted apart, so the quota and the usage live in
 * different dirs. */
static void test_v1_split_cpu(void)
{
	struct fake_spec f;
	struct zv_cgroup cg;
	struct zviz_error err = { 0 };
	fake_spec(&f, "split", 1);
	add_parent(&f, "memory", "memory");
	add_parent(&f, "pids", "pids");
	add_parent(&f, "cpu", "cpu");
	add_parent(&f, "cpuacct", "cpuacct");
	int rc = zv_cg_make_dirs(&cg, &f.s, fresh(&err));
	check(rc == 0 && cg.n == 4, "v1 split cpu/cpuacct: make_dirs (rc %d, `%s`)", rc, err.msg);
	touch_all(cg.dir[0].path, V1_MEMORY);
	touch_all(cg.dir[1].path, V1_PIDS);
	static const char *const cpu_files[] = { "cpu.cfs_period_us", "cpu.cfs_quota_us", "cgroup.procs", NULL };
	static const char *const acct_files[] = { "cpuacct.usage", "cgroup.procs", NULL };
	touch_all(cg.dir[2].path, cpu_files);
	touch_all(cg.dir[3].path, acct_files);
	rc = zv_cg_apply_limits(&cg, &f.s.limits, fresh(&err));
	check(rc == 0, "v1 split cpu/cpuacct: apply_limits returns 0 (rc %d, `%s`)", rc, err.msg);
	expect_content(cg.dir[2].path, "cpu.cfs_quota_us", "150000", "v1 split cpu/cpuacct");
	check(!exists_at(cg.dir[3].path, "cpu.cfs_quota_us"), "v1 split cpu/cpuacct: nothing written to the cpuacct dir");
	put_file(cg.dir[3].path, "cpuacct.usage", "42\n");
	expect_stats(&cg, &(struct stats_want){ "v1 split cpu/cpuacct: cpu_ns from the cpuacct dir", 42, 0, 0, 0 });
	for (size_t i = 0; i < cg.n; i++)
		empty_dir(cg.dir[i].path);
	rc = zv_cg_destroy(&cg, fresh(&err));
	check(rc == 0, "v1 split cpu/cpuacct: destroy returns 0");
}

int main(void)
{
	pathf(root, sizeof(root), "/tmp/zviz-test-cgroup-XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 2;
	}
	test_v2();
	test_v2_errors();
	test_v1();
	test_v1_split_cpu();
	rm_tree(root);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
