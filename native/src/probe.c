/* probe.c — kernel facts that only a system call can tell. Safe to call from any
 * thread of the server: nothing here forks, and every call only asks. */
#include <errno.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "internal.h"

static long read_long(const char *path)
{
	FILE *f = fopen(path, "re");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

ZVIZ_EXPORT int zviz_probe(char *out, size_t cap, struct zviz_error *err)
{
	zv_error_clear(err);
	if (!out || cap < 512)
		return zv_fail(err, ZVIZ_E_TOO_LARGE, 0, "probe: output buffer of %zu bytes is too small", cap);
	struct utsname u;
	if (uname(&u) < 0)
		return zv_fail(err, ZVIZ_E_SYSTEM, errno, "uname");

	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	int landlock_errno = abi < 0 ? errno : 0;

	static const struct {
		const char *name;
		unsigned int action;
	} actions[] = {
		{ "kill_process", SECCOMP_RET_KILL_PROCESS }, { "kill_thread", SECCOMP_RET_KILL_THREAD },
		{ "trap", SECCOMP_RET_TRAP },                 { "errno", SECCOMP_RET_ERRNO },
		{ "user_notif", SECCOMP_RET_USER_NOTIF },     { "trace", SECCOMP_RET_TRACE },
		{ "log", SECCOMP_RET_LOG },                   { "allow", SECCOMP_RET_ALLOW },
	};
	char acts[256] = "";
	size_t used = 0;
	bool seccomp = prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0;
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
		unsigned int a = actions[i].action;
		if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &a) == 0)
			used += (size_t)snprintf(acts + used, sizeof(acts) - used, "%s\"%s\"", used ? "," : "",
						 actions[i].name);
	}

	int n = snprintf(out, cap,
			 "{\"kernel\":\"%s\",\"arch\":\"%s\",\"maxUserNamespaces\":%ld,"
			 "\"landlockAbi\":%ld,\"landlockErrno\":%d,"
			 "\"seccomp\":{\"available\":%s,\"actions\":[%s]},\"nativeAbi\":%d}",
			 u.release, u.machine, read_long("/proc/sys/user/max_user_namespaces"), abi < 0 ? 0 : abi,
			 landlock_errno, seccomp ? "true" : "false", acts, ZVIZ_ABI_VERSION);
	if (n < 0 || (size_t)n >= cap)
		return zv_fail(err, ZVIZ_E_TOO_LARGE, 0, "probe: %d bytes do not fit in %zu", n, cap);
	return 0;
}
