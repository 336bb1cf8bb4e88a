/* userns.c — layer A: the user namespace's id maps.
 *
 * Inside, uid/gid 0 (used only for setup, never by the function) and 1000 (the function)
 * map to two host ids derived from the supervisor's pid. A live pid is unique on the
 * host, so two live sandboxes never share a host uid — and neither id is ever host root.
 * Root writes the maps from the parent namespace, so the child never needs
 * setgroups=deny and cannot choose its own mapping. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

int zv_userns_write_maps(pid_t child, uint32_t host_base, struct zviz_error *err)
{
	if (host_base == 0 || host_base > UINT32_MAX - 2)
		return zv_fail(err, ZVIZ_E_NAMESPACE, 0, "host id base %u: out of range", host_base);
	char path[64], map[128];
	snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", host_base, ZV_SANDBOX_UID, host_base + 1);
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)child);
	int r = zv_write_text(path, map, ZVIZ_E_NAMESPACE, err);
	if (r < 0)
		return r;
	snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", host_base, ZV_SANDBOX_GID, host_base + 1);
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)child);
	if ((r = zv_write_text(path, map, ZVIZ_E_NAMESPACE, err)) < 0)
		return r;
	/* An image root idmapped with these very maps (mnt.c) is idmapped now, before init
	 * is released to mount it. */
	return zv_mnt_idmap_pending(child, err);
}

/* A user namespace whose only purpose is to describe an idmapped mount of an image root
 * (mnt.c): the image's 0 becomes the sandbox's root host id, the image's owner ids
 * become the function's, and every other id of the image stays unmapped (shown as the
 * overflow id, owned by nobody the sandbox can be). It is the sandbox's own mapping with
 * the function's in-image ids, made before clone3 so the mount can be prepared on the
 * trusted side. The helper process lives only until its namespace is opened.
 * Returns an O_CLOEXEC fd of the namespace, or a negative code. */
int zv_userns_idmap_fd(uint32_t host_base, uint32_t owner_uid, uint32_t owner_gid, struct zviz_error *err)
{
	if (host_base == 0 || host_base > UINT32_MAX - 2)
		return zv_fail(err, ZVIZ_E_NAMESPACE, 0, "host id base %u: out of range", host_base);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "pipe for the idmap namespace");
	/* The supervisor is single-threaded: a plain fork is safe. The child only unshares,
	 * reports and blocks until killed. */
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return zv_fail(err, ZVIZ_E_SYSTEM, e, "fork the idmap namespace holder");
	}
	if (pid == 0) {
		char c = unshare(CLONE_NEWUSER) == 0 ? 'U' : 'E';
		ssize_t n = write(p[1], &c, 1);
		(void)n;
		for (;;)
			pause();
	}
	close(p[1]);
	char c = 0;
	ssize_t n;
	do
		n = read(p[0], &c, 1);
	while (n < 0 && errno == EINTR);
	close(p[0]);
	int fd = -1, r = 0;
	if (n != 1 || c != 'U') {
		r = zv_fail(err, ZVIZ_E_NAMESPACE, 0, "unshare a user namespace for the image's idmap");
		goto out;
	}
	char path[64], map[128];
	snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", host_base, owner_uid, host_base + 1);
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	if ((r = zv_write_text(path, map, ZVIZ_E_NAMESPACE, err)) < 0)
		goto out;
	snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", host_base, owner_gid, host_base + 1);
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
	if ((r = zv_write_text(path, map, ZVIZ_E_NAMESPACE, err)) < 0)
		goto out;
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		r = zv_fail(err, ZVIZ_E_NAMESPACE, errno, "open `%s`", path);
out:
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return r < 0 ? r : fd;
}
