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
#include <linux/openat2.h>

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

/* What every root gets, image or host: /dev, a fresh procfs (we are pid 1 of a new pid
 * namespace, so it shows only our tree), the /tmp tmpfs and /fn. */
static int mount_specials(struct root *r, const struct zv_spec *s, struct zviz_error *err)
{
	int rc;
	if ((rc = build_dev(r, &s->limits, err)) < 0)
		return rc;
	if (mount("proc", in_root(r, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "mount proc on `%s`", r->buf);
	unsigned long tmp_flags = (s->limits.flags & ZV_LF_TMP_EXEC) ? 0 : MS_NOEXEC;
	if ((rc = mount_tmpfs(in_root(r, "/tmp"), tmp_flags, s->limits.tmp_bytes, "1777", err)) < 0)
		return rc;
	return build_fn(r, s, err);
}

/* Seals the synthesized mounts (`sealed`, NULL-terminated) read-only, then binds the
 * profile's paths: after the seal, so a bind is never under a mount still writable. */
static int seal_then_bind(struct root *r, const struct zv_spec *s, const char *const *sealed, struct zviz_error *err)
{
	int rc;
	for (; *sealed; sealed++)
		if ((rc = remount_ro(in_root(r, *sealed), MS_NODEV, err)) < 0)
			return rc;
	for (size_t i = 0; i < s->nbinds; i++)
		if ((rc = bind_ro(s->binds[i].source, in_root(r, s->binds[i].target), false, err)) < 0)
			return rc;
	return 0;
}

/* ---- image roots --------------------------------------------------------------------
 * An image root is an unpacked OCI image in the store (worker-pool/images/), owned by
 * root and unreachable to the sandbox's unprivileged ids on the host. The supervisor
 * (host root, before clone3) takes a detached clone of it, read-only, nosuid and nodev,
 * and idmaps it: the image's 0 shows as the sandbox's 0, the image's owner ids as the
 * function's, anything else as the overflow id. The child moves that mount into its
 * own namespace as its root: no path of the store is ever resolved by the sandbox.
 * Without idmapped mounts (old kernels, filesystems that lack them) the clone is used
 * as it is and the image's files show as the overflow id: still readable where the
 * image made them world-readable, never writable.
 * The idmap's user namespace is the sandbox's own when it maps what the idmap needs (the
 * image's owner is the function's id), else one a helper process makes (userns.c). */

/* The image mount that waits for the sandbox's own user namespace (see below). */
static int idmap_pending = -1;
static const char *idmap_pending_root;

/* Idmapped mount attributes on `tree`; EINVAL, ENOSYS, EOPNOTSUPP and EPERM are the kernel
 * or the store's filesystem refusing idmaps: the mount is used as it is, read-only, nosuid
 * and nodev, its files shown as the overflow id (the documented fallback). Nothing
 * downstream depends on which of the two happened: the sandbox is as confined either way,
 * only the image's ownership is lost, and the image tests assert the idmapped view on
 * kernels that have it. */
static int set_image_attrs(int tree, uint64_t set, int userns, const char *root, struct zviz_error *err)
{
	struct mount_attr attr = { .attr_set = set, .userns_fd = userns >= 0 ? (uint64_t)userns : 0 };
	if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) == 0)
		return 0;
	int e = errno;
	if (!(set & MOUNT_ATTR_IDMAP) || (e != EINVAL && e != ENOSYS && e != EOPNOTSUPP && e != EPERM))
		return zv_fail(err, ZVIZ_E_MOUNT, e, "%s image root `%s`", set & MOUNT_ATTR_IDMAP ? "idmap" : "make read-only", root);
	set &= ~(uint64_t)MOUNT_ATTR_IDMAP;
	return set == 0 ? 0 : set_image_attrs(tree, set, -1, root, err);
}

int zv_mnt_open_image(const struct zv_spec *s, uint32_t host_base, int *fd, struct zviz_error *err)
{
	*fd = -1;
	if (!s->image_root)
		return 0;
	int tree = (int)open_tree(AT_FDCWD, s->image_root,
				  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
	if (tree < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "clone image root `%s`", s->image_root);
	const uint64_t ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
	int r;
	if (s->image_uid == ZV_SANDBOX_UID && s->image_gid == ZV_SANDBOX_GID) {
		/* The image's owner is the function's own id (every image whose User is root or
		 * 1000): the sandbox's user namespace has exactly the maps the idmap needs, so
		 * no namespace is made for it. Read-only now; the idmap once clone3 has made that
		 * namespace and the supervisor has written its maps (zv_mnt_idmap_pending, from
		 * zv_userns_write_maps), before init is released: init touches the mount only
		 * after that, and the mount is one object whichever fd names it. */
		if ((r = set_image_attrs(tree, ro, -1, s->image_root, err)) < 0)
			goto fail;
		idmap_pending = fcntl(tree, F_DUPFD_CLOEXEC, 3);
		idmap_pending_root = s->image_root;
		if (idmap_pending < 0) {
			r = zv_fail(err, ZVIZ_E_SYSTEM, errno, "keep image root `%s` for its idmap", s->image_root);
			goto fail;
		}
	} else {
		int userns = zv_userns_idmap_fd(host_base, s->image_uid, s->image_gid, err);
		if (userns < 0) {
			r = userns;
			goto fail;
		}
		r = set_image_attrs(tree, ro | MOUNT_ATTR_IDMAP, userns, s->image_root, err);
		close(userns);
		if (r < 0)
			goto fail;
	}
	*fd = tree;
	return 0;
fail:
	close(tree);
	return r;
}

int zv_mnt_idmap_pending(pid_t child, struct zviz_error *err)
{
	if (idmap_pending < 0)
		return 0;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)child);
	int userns = open(path, O_RDONLY | O_CLOEXEC);
	int r;
	if (userns < 0)
		r = zv_fail(err, ZVIZ_E_NAMESPACE, errno, "open `%s`", path);
	else
		r = set_image_attrs(idmap_pending, MOUNT_ATTR_IDMAP, userns, idmap_pending_root, err);
	if (userns >= 0)
		close(userns);
	close(idmap_pending);
	idmap_pending = -1;
	return r;
}

/* ---- job workspaces -----------------------------------------------------------------
 * A job's workspace is a filesystem of its own (the server loop-mounts an ext4 image of
 * the job's disk size under /run/zviz/jobs), its files owned by 1000:1000. As for an
 * image, the supervisor (host root, before clone3) takes a detached clone of it and
 * idmaps it: on-disk 1000 is the function's host id, on-disk 0 the sandbox's root, and
 * nothing else the sandbox can be. nosuid and nodev: a build may make files executable,
 * never privileged or a device. Unlike an image there is no fallback without idmapped
 * mounts: the workspace would show as the overflow id and be unwritable, so the job
 * fails with a clear error instead of running half-blind. */
int zv_mnt_open_workspace(const struct zv_spec *s, uint32_t host_base, int *fd, struct zviz_error *err)
{
	*fd = -1;
	if (!s->workspace_src)
		return 0;
	int tree = (int)open_tree(AT_FDCWD, s->workspace_src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
	if (tree < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "clone workspace `%s`", s->workspace_src);
	int userns = zv_userns_idmap_fd(host_base, ZV_SANDBOX_UID, ZV_SANDBOX_GID, err);
	if (userns < 0) {
		close(tree);
		return userns;
	}
	struct mount_attr attr = {
		.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_IDMAP,
		.userns_fd = (uint64_t)userns,
	};
	int rc = mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof(attr));
	int e = errno;
	close(userns);
	if (rc < 0) {
		close(tree);
		return zv_fail(err, ZVIZ_E_MOUNT, e, "idmap workspace `%s`", s->workspace_src);
	}
	*fd = tree;
	return 0;
}

/* Child side: the workspace lands on its target in the new root, which must be a real
 * directory reached without a symlink (the runtime root makes it; an image carries it). */
static int place_workspace(const char *root, const struct zv_spec *s, int ws_fd, struct zviz_error *err)
{
	if (ws_fd < 0)
		return 0;
	int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "open `%s`", root);
	struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH };
	int target = (int)syscall(SYS_openat2, rootfd, s->workspace_target + 1, &how, sizeof(how));
	int e = errno;
	close(rootfd);
	if (target < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, e, "workspace mount point `%s`", s->workspace_target);
	int rc = move_mount(ws_fd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
	e = errno;
	close(target);
	if (rc < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, e, "move workspace on `%s`", s->workspace_target);
	close(ws_fd);
	return 0;
}

/* A mount point the image must carry (the store makes them at unpack): a real directory
 * or regular file reached without any symlink, so no mount of ours lands elsewhere. */
static int image_target(int rootfd, const char *rel, bool dir, struct zviz_error *err)
{
	struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH };
	int fd = (int)syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
	if (fd < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "image mount point `/%s`", rel);
	struct stat st;
	int rc = fstat(fd, &st);
	close(fd);
	if (rc < 0 || (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
		return zv_fail(err, ZVIZ_E_MOUNT, 0, "image mount point `/%s`: not a %s", rel, dir ? "directory" : "regular file");
	return 0;
}

static int build_image_root(const struct zv_spec *s, int image_fd, int ws_fd, struct zviz_error *err)
{
	int rc;
	char root[PATH_MAX], staged[PATH_MAX];
	/* The tmpfs on root_base holds the image mount (r) and the files ZViz writes for
	 * /etc (etc); it stays behind in the old root, detached with it. */
	if ((rc = mount_tmpfs(s->root_base, 0, 1 << 20, "0755", err)) < 0)
		return rc;
	snprintf(root, sizeof(root), "%s/r", s->root_base);
	snprintf(staged, sizeof(staged), "%s/etc", s->root_base);
	if ((rc = make_dir(root, 0755, err)) < 0 || (rc = make_dir(staged, 0755, err)) < 0)
		return rc;
	if (move_mount(image_fd, "", AT_FDCWD, root, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "move image root on `%s`", root);
	close(image_fd);

	int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "open `%s`", root);
	static const struct {
		const char *rel;
		bool dir;
	} points[] = {
		{ "proc", true }, { "dev", true }, { "tmp", true }, { "fn", true }, { "etc", true },
		{ "etc/hosts", false }, { "etc/hostname", false }, { "etc/resolv.conf", false },
	};
	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++)
		if ((rc = image_target(rootfd, points[i].rel, points[i].dir, err)) < 0) {
			close(rootfd);
			return rc;
		}
	close(rootfd);

	struct root r = { .base = root };
	const struct {
		const char *name;
		const char *text;
	} files[] = {
		{ "/etc/hosts", HOSTS },
		{ "/etc/hostname", ZV_HOSTNAME "\n" },
		{ "/etc/resolv.conf", s->resolv_conf ? s->resolv_conf : "" },
	};
	char src[PATH_MAX];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(src, sizeof(src), "%s%s", s->root_base, files[i].name);
		if ((rc = make_file(src, files[i].text, strlen(files[i].text), 0444, err)) < 0)
			return rc;
		if ((rc = bind_ro(src, in_root(&r, files[i].name), false, err)) < 0)
			return rc;
	}
	if ((rc = mount_specials(&r, s, err)) < 0)
		return rc;
	/* Profile binds land on mount points the image has; the image itself is read-only. */
	static const char *const sealed[] = { "/dev", "/fn", NULL };
	if ((rc = seal_then_bind(&r, s, sealed, err)) < 0)
		return rc;
	if ((rc = place_workspace(root, s, ws_fd, err)) < 0)
		return rc;

	/* pivot_root(".", ".") stacks the old root on the new one; detaching it leaves no
	 * path to the host's tree (the image needs no directory of ours for it). */
	if (chdir(root) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "chdir `%s`", root);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "pivot_root into `%s`", root);
	if (umount2(".", MNT_DETACH) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "detach old root");
	if (chdir("/") < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "chdir `/`");
	return remount_ro("/", MS_NODEV, err);
}

int zv_mnt_build_root(const struct zv_spec *s, int image_fd, int ws_fd, struct zviz_error *err)
{
	struct root r = { .base = s->root_base };
	int rc;

	/* Nothing we mount may propagate back to the host's namespace. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return zv_fail(err, ZVIZ_E_MOUNT, errno, "make `/` private");
	if (image_fd >= 0)
		return build_image_root(s, image_fd, ws_fd, err);
	if ((rc = mount_tmpfs(s->root_base, 0, 1 << 20, "0755", err)) < 0)
		return rc;

	static const char *const dirs[] = { "/usr", "/etc", "/proc", "/dev", "/tmp", "/fn", "/" OLDROOT };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if ((rc = make_dir(in_root(&r, dirs[i]), 0755, err)) < 0)
			return rc;
	if (s->workspace_target && (rc = make_dir(in_root(&r, s->workspace_target), 0755, err)) < 0)
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
	if ((rc = mount_specials(&r, s, err)) < 0)
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
	static const char *const sealed[] = { "/etc", "/dev", "/fn", NULL };
	if ((rc = seal_then_bind(&r, s, sealed, err)) < 0)
		return rc;
	if ((rc = place_workspace(s->root_base, s, ws_fd, err)) < 0)
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
