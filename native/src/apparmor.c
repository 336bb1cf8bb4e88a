/* apparmor.c — layer C on hosts with AppArmor: confine the function by a named profile.
 *
 * Writing "exec <profile>" to /proc/self/attr/apparmor/exec (older kernels:
 * /proc/self/attr/exec) asks AppArmor to switch to that profile at the next execve —
 * the semantics of libapparmor's aa_change_onexec(). The transition happens atomically
 * with the exec of the runtime, so no code of the function runs unconfined. The server
 * refuses, at start-up, a profile naming an AppArmor profile on a host without
 * AppArmor, so reaching here without it is an error, never a silent skip. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"

int zv_apparmor_change_onexec(const char *profile, struct zviz_error *err)
{
	if (!profile)
		return 0;
	char cmd[160];
	int n = snprintf(cmd, sizeof(cmd), "exec %s", profile);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		return zv_fail(err, ZVIZ_E_CAPS, ENAMETOOLONG, "AppArmor profile name `%.64s`", profile);
	const char *paths[] = { "/proc/self/attr/apparmor/exec", "/proc/self/attr/exec" };
	int last = ENOENT;
	for (size_t i = 0; i < 2; i++) {
		int fd = open(paths[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			last = errno;
			continue;
		}
		ssize_t w = write(fd, cmd, (size_t)n);
		last = errno;
		close(fd);
		if (w == n)
			return 0;
	}
	return zv_fail(err, ZVIZ_E_CAPS, last, "apply AppArmor profile `%s` on exec", profile);
}
