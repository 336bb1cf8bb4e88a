/* mnt.c — layer A: the sandbox's filesystem view.
 *
 * Runs in the child, inside its new user + mount namespace, as namespace-root. Builds a
 * fresh tmpfs root on spec->root_base, fills it with read-only binds of the runtime's
 * paths and small synthesized files, pivots into it and detaches the old root, so no
 * path of the host stays reachable. Every mount is nosuid and nodev except the few
 * device-node binds under /dev, which need dev and are single files.
 *
 * The host's /etc is never bound (unless a test-only profile says so): passwd, group,
 * hosts and nsswitch are written fresh, and only public, content-free-of-secrets files
 * (ld.so.cache, CA certificates, alternatives symlinks) are bound read-only. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#define OLDROOT ".zviz-oldroot"

struct root {
	const char *base;
	char buf[PATH_MAX];
};

static const char *in_root(struct root *r, const char *path)
{
	snprintf(r->buf, sizeof(r->buf), "%s%s", r->base, path);
	return r->buf;
}

static int mount_tmpfs(const char *where, unsigned long flags, unsigned long long size, const char *mode,
		       struct zviz_error *err)
{
	char opts[128];
	snprintf(opts, sizeof(opts), "size=%llu,mode=%s,nr_inodes=%llu", size, mode,
		 size / 4096 + 64 > 65536 ? 65536ull : size / 4096 + 64);
	if (mount("tmpfs", where, "tmpfs", flags | MS_NOSUID | MS_NODEV, opts) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "mount tmpfs on `%s` (%s)", where, opts);
	return 0;
}

/* Flags that a remount inside a user namespace must keep, because the kernel locks them
 * on mounts inherited from a more privileged namespace. */
static unsigned long locked_flags(const char *path)
{
	struct statvfs st;
	if (statvfs(path, &st) < 0)
		return 0;
	unsigned long f = 0;
	if (st.f_flag & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (st.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (st.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (st.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

static int remount_ro(const char *where, unsigned long extra, struct zviz_error *err)
{
	unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | extra | locked_flags(where);
	if (mount(NULL, where, NULL, flags, NULL) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "remount `%s` read-only", where);
	return 0;
}

/* Bind src read-only on dst. Devices keep `dev`; everything else is nodev. */
static int bind_ro(const char *src, const char *dst, bool device, struct zviz_error *err)
{
	/* Non-recursive first: submounts of a host path are not part of the view. The kernel
	 * refuses that (EINVAL) when it would reveal what a locked submount hides; then
	 * the whole subtree is bound instead, and remounted read-only at its top. */
	if (mount(src, dst, NULL, MS_BIND, NULL) < 0) {
		if (errno != EINVAL || mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
			return zv_fail(err, ZVIZ_E_MOUNT, errno, "bind `%s` on `%s`", src, dst);
	}
	return remount_ro(dst, device ? MS_NOEXEC : MS_NODEV, err);
}

static int make_dir(const char *path, mode_t mode, struct zviz_error *err)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "mkdir `%s`", path);
	return 0;
}

static int make_file(const char *path, const void *data, size_t len, mode_t mode, struct zviz_error *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "create `%s`", path);
	const uint8_t *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			return zv_fail(err, ZVIZ_E_MOUNT, e, "write `%s`", path);
		}
		p += n;
		len -= (size_t)n;
	}
	if (fchmod(fd, mode) < 0) {
		int e = errno;
		close(fd);
		return zv_fail(err, ZVIZ_E_MOUNT, e, "chmod `%s`", path);
	}
	close(fd);
	return 0;
}

/* Creates every missing directory of `path` (inside the new root) and, if is_file, an
 * empty file at its end to bind onto. */
static int make_target(struct root *r, const char *path, bool is_file, struct zviz_error *err)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s%s", r->base, path);
	size_t base_len = strlen(r->base);
	for (char *p = tmp + base_len + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		int rc = make_dir(tmp, 0755, err);
		*p = '/';
		if (rc < 0)
			return rc;
	}
	if (!is_file)
		return make_dir(tmp, 0755, err);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "create bind target `%s`", tmp);
	close(fd);
	return 0;
}

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static const char PASSWD[] = "root:x:0:0:root:/root:/usr/sbin/nologin\n"
			     "sandbox:x:1000:1000:sandbox:/tmp:/usr/sbin/nologin\n"
			     "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
static const char GROUP[] = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n";
static const char HOSTS[] = "127.0.0.1\tlocalhost " ZV_HOSTNAME "\n::1\tlocalhost ip6-localhost ip6-loopback\n";
static const char NSSWITCH[] = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
			       "networks: files\nprotocols: files\nservices: files\n";

/* Public files from the host's /etc that runtimes need; bound read-only when present. */
static const char *const ETC_PUBLIC[] = {
	"/etc/ld.so.cache", "/etc/ssl/certs", "/etc/alternatives", "/etc/services", "/etc/protocols",
};

static int build_etc(struct root *r, const struct zv_spec *s, struct zviz_error *err)
{
	int rc;
	if ((rc = mount_tmpfs(in_root(r, "/etc"), MS_NOEXEC, 1 << 20, "0755", err)) < 0)
		return rc;
	const struct {
		const char *name;
		const char *text;
	} files[] = {
		{ "/etc/passwd", PASSWD },     { "/etc/group", GROUP },      { "/etc/hosts", HOSTS },
		{ "/etc/nsswitch.conf", NSSWITCH }, { "/etc/hostname", ZV_HOSTNAME "\n" },
		{ "/etc/resolv.conf", s->resolv_conf ? s->resolv_conf : "" },
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if ((rc = make_file(in_root(r, files[i].name), files[i].text, strlen(files[i].text), 0444, err)) < 0)
			return rc;
	for (size_t i = 0; i < sizeof(ETC_PUBLIC) / sizeof(ETC_PUBLIC[0]); i++) {
		const char *src = ETC_PUBLIC[i];
		if (!exists(src))
			continue;
		if ((rc = make_target(r, src, !is_dir(src), err)) < 0)
			return rc;
		if ((rc = bind_ro(src, in_root(r, src), false, err)) < 0)
			return rc;
	}
	return 0;
}

static int build_dev(struct root *r, const struct zv_limits *l, struct zviz_error *err)
{
	static const char *const nodes[] = { "null", "zero", "full", "random", "urandom" };
	int rc;
	if ((rc = mount_tmpfs(in_root(r, "/dev"), MS_NOEXEC, 64 << 10, "0755", err)) < 0)
		return rc;
	char src[64], dst[64];
	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		snprintf(src, sizeof(src), "/dev/%s", nodes[i]);
		snprintf(dst, sizeof(dst), "/dev/%s", nodes[i]);
		if ((rc = make_target(r, dst, true, err)) < 0)
			return rc;
		if ((rc = bind_ro(src, in_root(r, dst), true, err)) < 0)
			return rc;
		/* Read-only on the mount, but writes to a device node go to the driver: null
		 * and friends still accept writes, which is what programs expect. */
	}
	static const struct {
		const char *link, *target;
	} links[] = {
		{ "/dev/fd", "/proc/self/fd" },
		{ "/dev/stdin", "/proc/self/fd/0" },
		{ "/dev/stdout", "/proc/self/fd/1" },
		{ "/dev/stderr", "/proc/self/fd/2" },
	};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i].target, in_root(r, links[i].link)) < 0)
			return zv_fail(err, ZVIZ_E_MOUNT, errno, "symlink `%s`", links[i].link);
	if ((rc = make_dir(in_root(r, "/dev/shm"), 0755, err)) < 0)
		return rc;
	return mount_tmpfs(in_root(r, "/dev/shm"), MS_NOEXEC, l->shm_bytes, "1777", err);
}

static int build_fn(struct root *r, const struct zv_spec *s, struct zviz_error *err)
{
	unsigned long long total = 64 << 10;
	for (size_t i = 0; i < s->nfiles; i++)
		total += s->files[i].len + 4096;
	int rc = mount_tmpfs(in_root(r, "/fn"), MS_NOEXEC, total, "0755", err);
	if (rc < 0)
		return rc;
	char path[PATH_MAX];
	for (size_t i = 0; i < s->nfiles; i++) {
		/* Nested names (lib/util.js): make the directories on the way. */
		snprintf(path, sizeof(path), "%s/fn/%s", r->base, s->files[i].name);
		for (char *p = path + strlen(r->base) + 4; *p; p++) {
			if (*p != '/')
				continue;
			*p = '\0';
			rc = make_dir(path, 0755, err);
			*p = '/';
			if (rc < 0)
				return rc;
		}
		if ((rc = make_file(path, s->files[i].data, s->files[i].len, 0444, err)) < 0)
			return rc;
	}
	return 0;
}

int zv_mnt_build_root(const struct zv_spec *s, struct zviz_error *err)
{
	struct root r = { .base = s->root_base };
	int rc;

	/* Nothing we mount may propagate back to the host's namespace. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "make `/` private");
	if ((rc = mount_tmpfs(s->root_base, 0, 1 << 20, "0755", err)) < 0)
		return rc;

	static const char *const dirs[] = { "/usr", "/etc", "/proc", "/dev", "/tmp", "/fn", "/" OLDROOT };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if ((rc = make_dir(in_root(&r, dirs[i]), 0755, err)) < 0)
			return rc;
	/* usr-merge links, mirrored from the host so interpreters resolve as they do there. */
	static const char *const merged[] = { "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32" };
	char target[PATH_MAX];
	for (size_t i = 0; i < sizeof(merged) / sizeof(merged[0]); i++) {
		ssize_t n = readlink(merged[i], target, sizeof(target) - 1);
		if (n <= 0)
			continue; /* absent, or a real directory: not supported, /usr carries it all */
		target[n] = '\0';
		if (symlink(target, in_root(&r, merged[i])) < 0)
			return zv_fail(err, ZVIZ_E_MOUNT, errno, "symlink `%s` -> `%s`", merged[i], target);
	}

	if ((rc = bind_ro("/usr", in_root(&r, "/usr"), false, err)) < 0)
		return rc;
	if ((rc = build_etc(&r, s, err)) < 0)
		return rc;
	if ((rc = build_dev(&r, &s->limits, err)) < 0)
		return rc;
	/* A fresh procfs: we are pid 1 of a new pid namespace, so it shows only our tree. */
	if (mount("proc", in_root(&r, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "mount proc on `%s`", r.buf);
	unsigned long tmp_flags = (s->limits.flags & ZV_LF_TMP_EXEC) ? 0 : MS_NOEXEC;
	if ((rc = mount_tmpfs(in_root(&r, "/tmp"), tmp_flags, s->limits.tmp_bytes, "1777", err)) < 0)
		return rc;
	if ((rc = build_fn(&r, s, err)) < 0)
		return rc;

	/* Extra binds from the profile: targets are created while the tree is writable,
	 * the binds happen after the synthesized mounts are sealed. */
	for (size_t i = 0; i < s->nbinds; i++) {
		if (!exists(s->binds[i].source))
			return zv_fail(err, ZVIZ_E_MOUNT, errno, "bind source `%s`", s->binds[i].source);
		if (!exists(in_root(&r, s->binds[i].target)) &&
		    (rc = make_target(&r, s->binds[i].target, !is_dir(s->binds[i].source), err)) < 0)
			return rc;
	}
	static const char *const sealed[] = { "/etc", "/dev", "/fn" };
	for (size_t i = 0; i < sizeof(sealed) / sizeof(sealed[0]); i++)
		if ((rc = remount_ro(in_root(&r, sealed[i]), MS_NODEV, err)) < 0)
			return rc;
	for (size_t i = 0; i < s->nbinds; i++)
		if ((rc = bind_ro(s->binds[i].source, in_root(&r, s->binds[i].target), false, err)) < 0)
			return rc;

	/* pivot_root + detach: the host's tree is no longer reachable by any path, not even
	 * through `..` from the new root or through an fd we keep (we keep none). */
	if (chdir(s->root_base) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "chdir `%s`", s->root_base);
	if (syscall(SYS_pivot_root, ".", OLDROOT) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "pivot_root into `%s`", s->root_base);
	if (chdir("/") < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "chdir `/`");
	if (umount2("/" OLDROOT, MNT_DETACH) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "detach old root");
	if (rmdir("/" OLDROOT) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "remove old root mount point");
	return remount_ro("/", MS_NODEV, err);
}
