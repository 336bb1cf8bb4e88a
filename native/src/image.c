/* image.c — layer A, store side: makes an unpacked image tree safe to be a sandbox root.
 *
 * Runs as `zviz-supervisor --sanitize-image <rootfs>` right after umoci has unpacked the
 * layers (rootless mode: no device nodes made, no ownership given away, the image's
 * owners recorded in the `user.rootlesscontainers` xattr) into a staging directory only
 * root can reach, and before the tree is renamed into the store. It walks the tree
 * without following any symlink and:
 *   - removes device nodes and sockets: a root of ours holds no device but the few
 *     ZViz binds under /dev;
 *   - clears setuid and setgid: nothing in an image may raise privileges, even on a
 *     mount that is already nosuid;
 *   - gives each entry the image's owner (from the xattr), so an idmapped mount shows
 *     the image's ownership inside the sandbox;
 *   - refuses the tree if any entry sits on another filesystem (a mount under it) or
 *     resolves outside it;
 *   - makes the mount points a sandbox needs (/proc /dev /tmp /fn /etc, a job's /workspace, and the files
 *     /etc/hosts /etc/hostname /etc/resolv.conf), replacing whatever non-directory or
 *     non-file the image put there, because the image is read-only once in the store.
 * It prints one JSON line of counts. Everything is relative to an O_PATH fd of the root
 * and opened with O_NOFOLLOW, so a symlink in the image never redirects a write. */
#define _FILE_OFFSET_BITS 64
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "sandbox.h"

#define XATTR_OWNER "user.rootlesscontainers"
#define MAX_DEPTH 256

struct counts {
	unsigned long long bytes, entries, removed, stripped, chowned;
	dev_t dev;
};

/* The rootless-containers protobuf: message { uint32 uid = 1; uint32 gid = 2; }. */
static int parse_owner(const uint8_t *p, size_t n, uint32_t *uid, uint32_t *gid)
{
	*uid = 0;
	*gid = 0;
	size_t i = 0;
	while (i < n) {
		uint64_t key = 0, val = 0;
		for (int shift = 0;; shift += 7) {
			if (i >= n || shift > 63)
				return -1;
			key |= (uint64_t)(p[i] & 0x7f) << shift;
			if (!(p[i++] & 0x80))
				break;
		}
		if ((key & 7) != 0)
			return -1; /* only varints in this message */
		for (int shift = 0;; shift += 7) {
			if (i >= n || shift > 63)
				return -1;
			val |= (uint64_t)(p[i] & 0x7f) << shift;
			if (!(p[i++] & 0x80))
				break;
		}
		if (val > UINT32_MAX)
			return -1;
		if ((key >> 3) == 1)
			*uid = (uint32_t)val;
		else if ((key >> 3) == 2)
			*gid = (uint32_t)val;
	}
	return 0;
}

static int fix_entry(int dirfd, const char *name, const struct stat *st, struct counts *c, struct zviz_error *err)
{
	if (st->st_dev != c->dev)
		return zv_fail(err, ZVIZ_E_MOUNT, 0, "image entry `%s`: on another filesystem", name);
	if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode) || S_ISSOCK(st->st_mode)) {
		if (unlinkat(dirfd, name, 0) < 0)
			return zv_fail(err, ZVIZ_E_MOUNT, errno, "remove device `%s`", name);
		c->removed++;
		return 1;
	}
	c->entries++;
	if (S_ISREG(st->st_mode))
		c->bytes += (unsigned long long)st->st_size;
	/* The owner the image gave it; rootless umoci left the entry ours (host root). */
	char path[32];
	int fd = -1;
	if (!S_ISLNK(st->st_mode)) {
		fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return zv_fail(err, ZVIZ_E_MOUNT, errno, "open image entry `%s`", name);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	uint8_t buf[64];
	ssize_t n = S_ISLNK(st->st_mode) ? -1 : getxattr(path, XATTR_OWNER, buf, sizeof(buf));
	uint32_t uid = 0, gid = 0;
	if (n >= 0 && parse_owner(buf, (size_t)n, &uid, &gid) < 0) {
		close(fd);
		return zv_fail(err, ZVIZ_E_MOUNT, 0, "image entry `%s`: malformed owner record", name);
	}
	if (n >= 0) {
		if (uid > 65535 || gid > 65535)
			uid = gid = 65534; /* beyond any mapping we make: nobody */
		if (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
			int e = errno;
			close(fd);
			return zv_fail(err, ZVIZ_E_MOUNT, e, "chown image entry `%s`", name);
		}
		removexattr(path, XATTR_OWNER);
		c->chowned++;
	}
	/* After the chown (which clears them on files anyway): no setuid, no setgid. */
	if (!S_ISLNK(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID))) {
		if (chmod(path, st->st_mode & 07777 & ~(mode_t)(S_ISUID | S_ISGID)) < 0) {
			int e = errno;
			close(fd);
			return zv_fail(err, ZVIZ_E_MOUNT, e, "strip setuid/setgid of `%s`", name);
		}
		c->stripped++;
	}
	if (fd >= 0)
		close(fd);
	return 0;
}

static int walk(int dirfd, int depth, struct counts *c, struct zviz_error *err)
{
	if (depth > MAX_DEPTH)
		return zv_fail(err, ZVIZ_E_MOUNT, 0, "image tree deeper than %d levels", MAX_DEPTH);
	int dup = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (dup < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "dup directory fd");
	DIR *d = fdopendir(dup);
	if (!d) {
		close(dup);
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "read image directory");
	}
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = zv_fail(err, ZVIZ_E_MOUNT, errno, "stat image entry `%s`", e->d_name);
			break;
		}
		if ((rc = fix_entry(dirfd, e->d_name, &st, c, err)) < 0)
			break;
		if (rc == 1) {
			rc = 0;
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				rc = zv_fail(err, ZVIZ_E_MOUNT, errno, "open image directory `%s`", e->d_name);
				break;
			}
			rc = walk(sub, depth + 1, c, err);
			close(sub);
			if (rc < 0)
				break;
		}
	}
	closedir(d);
	return rc;
}

/* Replaces whatever is at `name` (relative to dirfd) unless it is already of the wanted
 * kind; never follows a symlink. Directories are emptied only if they were not one. */
static int ensure_point(int rootfd, const char *name, bool dir, struct zviz_error *err)
{
	struct stat st;
	if (fstatat(rootfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode))
			return 0;
		if (S_ISDIR(st.st_mode))
			return zv_fail(err, ZVIZ_E_MOUNT, 0, "image `/%s` is a directory, not a file", name);
		if (unlinkat(rootfd, name, 0) < 0)
			return zv_fail(err, ZVIZ_E_MOUNT, errno, "replace image `/%s`", name);
	}
	if (dir) {
		if (mkdirat(rootfd, name, 0755) < 0)
			return zv_fail(err, ZVIZ_E_MOUNT, errno, "make image `/%s`", name);
		return 0;
	}
	int fd = openat(rootfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "make image `/%s`", name);
	close(fd);
	return 0;
}

int zv_image_sanitize(const char *rootfs, struct zviz_error *err)
{
	int rootfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rootfd < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "open image rootfs `%s`", rootfs);
	struct stat st;
	struct counts c = { 0 };
	int rc = fstat(rootfd, &st) < 0 ? zv_fail(err, ZVIZ_E_MOUNT, errno, "stat `%s`", rootfs) : 0;
	c.dev = st.st_dev;
	if (rc == 0 && (st.st_mode & 07777) != 0755 && fchmod(rootfd, 0755) < 0)
		rc = zv_fail(err, ZVIZ_E_MOUNT, errno, "chmod `%s`", rootfs);
	if (rc == 0)
		rc = walk(rootfd, 0, &c, err);
	static const struct {
		const char *name;
		bool dir;
	} points[] = {
		{ "proc", true }, { "dev", true }, { "tmp", true }, { "fn", true }, { "etc", true },
		{ "etc/hosts", false }, { "etc/hostname", false }, { "etc/resolv.conf", false },
		{ "workspace", true },
	};
	for (size_t i = 0; rc == 0 && i < sizeof(points) / sizeof(points[0]); i++)
		rc = ensure_point(rootfd, points[i].name, points[i].dir, err);
	close(rootfd);
	if (rc < 0)
		return rc;
	printf("{\"bytes\":%llu,\"entries\":%llu,\"removed\":%llu,\"stripped\":%llu,\"chowned\":%llu}\n", c.bytes,
	       c.entries, c.removed, c.stripped, c.chowned);
	return 0;
}
