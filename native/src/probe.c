/* probe.c — kernel facts that only a system call can tell. Safe to call from any
 * thread of the server: every call only asks, and the one child it makes (the IA32
 * probe) runs a few instructions and no library code. */
#include <errno.h>
#include <signal.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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

/* Whether this kernel runs i386 system calls made by `int 0x80` from a 64-bit process
 * (CONFIG_IA32_EMULATION and not ia32_emulation=0). Without them `int 0x80` raises
 * SIGSEGV before seccomp sees anything, so it cannot be asked in-process: a child asks.
 * The child is forked from a threaded process, so it makes raw system calls only (no
 * allocation, no locks) until it exits. Returns 1 (exists), 0 (does not), -1 (unknown). */
static int probe_ia32(void)
{
#if defined(__x86_64__)
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* A SIGSEGV here is the answer, not a crash: no core file, no core helper. */
		struct rlimit none = { 0, 0 };
		setrlimit(RLIMIT_CORE, &none);
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		long ret = 20; /* i386 __NR_getpid */
		__asm__ volatile("int $0x80" : "+a"(ret) : : "memory");
		_exit(ret > 0 ? 0 : 1);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status) == 0 ? 1 : 0;
	return WIFSIGNALED(status) && (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS) ? 0 : -1;
#else
	return 0;
#endif
}

/* Whether x32 system calls (number | 0x40000000) exist: an unsupported one fails with
 * ENOSYS, a supported getpid answers, so asking in-process is harmless. */
static int probe_x32(void)
{
#if defined(__x86_64__)
	long r = syscall(SYS_getpid | 0x40000000L);
	if (r > 0)
		return 1;
	return errno == ENOSYS ? 0 : -1;
#else
	return 0;
#endif
}

static const char *tristate(int v)
{
	return v > 0 ? "true" : v == 0 ? "false" : "null";
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

	int ia32 = probe_ia32();
	int x32 = probe_x32();

	int n = snprintf(out, cap,
			 "{\"kernel\":\"%s\",\"arch\":\"%s\",\"maxUserNamespaces\":%ld,"
			 "\"landlockAbi\":%ld,\"landlockErrno\":%d,"
			 "\"seccomp\":{\"available\":%s,\"actions\":[%s]},"
			 "\"syscallAbis\":{\"ia32\":%s,\"x32\":%s},\"nativeAbi\":%d}",
			 u.release, u.machine, read_long("/proc/sys/user/max_user_namespaces"), abi < 0 ? 0 : abi,
			 landlock_errno, seccomp ? "true" : "false", acts, tristate(ia32), tristate(x32),
			 ZVIZ_ABI_VERSION);
	if (n < 0 || (size_t)n >= cap)
		return zv_fail(err, ZVIZ_E_TOO_LARGE, 0, "probe: %d bytes do not fit in %zu", n, cap);
	return 0;
}
