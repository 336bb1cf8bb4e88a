/* seccomp.c — layer B: the syscall filter.
 *
 * Compiled with libseccomp in the supervisor (trusted, single-threaded, before clone),
 * from the allowlist the profile names; the child only loads the prepared program, as
 * the very last step before execve.
 *
 * Everything not allowed goes to the supervisor (SECCOMP_RET_USER_NOTIF, broker.c): it records the
 * call for the invocation's audit and answers EPERM (ENOSYS for clone3, so glibc falls
 * back to clone; EAFNOSUPPORT for socket and socketpair, which are allowed only for the
 * address families the profile names). If the supervisor is gone, the kernel answers ENOSYS: the filter fails
 * closed. The always-denied list below wins over any profile.
 *
 * A hand-written prefix runs before libseccomp's program, for what libseccomp cannot
 * say: any architecture but the native one and any x32 call (nr | 0x40000000) kills
 * the process; ioctl(TIOCSTI) and ioctl(TIOCLINUX) are denied by the low 32 bits of the
 * command word — the kernel ignores the high half, so comparing all 64 bits, as a
 * plain "cmd != TIOCSTI" rule would, lets 0x1_00005412 through. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#if defined(__x86_64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_X86_64
#define X32_SYSCALL_BIT 0x40000000u
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_AARCH64
#define X32_SYSCALL_BIT 0u
#else
#error "unsupported architecture"
#endif

#ifndef TIOCLINUX
#define TIOCLINUX 0x541C
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* Denied whatever a profile says: kernel attack surface with no use in a function. */
static const char *const ALWAYS_DENIED[] = {
	"ptrace", "process_vm_readv", "process_vm_writev", "kexec_load", "kexec_file_load", "init_module",
	"finit_module", "delete_module", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
	"request_key", "io_uring_setup", "io_uring_enter", "io_uring_register", "mount", "umount2", "pivot_root",
	"chroot", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr", "unshare",
	"setns", "clone3", "acct", "swapon", "swapoff", "reboot", "syslog", "quotactl", "quotactl_fd",
	"name_to_handle_at", "open_by_handle_at", "lookup_dcookie", "uselib", "vhangup", "iopl", "ioperm",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "pidfd_getfd",
};

/* What the child itself needs between loading the filter and execve. */
static const char *const ALWAYS_ALLOWED[] = { "execve", "exit_group", "exit", "close", "sendmsg", "write",
					       "rt_sigreturn" };

#define NS_FLAGS                                                                                                   \
	((uint64_t)(CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
		    CLONE_NEWNET | CLONE_NEWTIME))

bool zv_sc_always_denied(const char *name)
{
	for (size_t i = 0; i < sizeof(ALWAYS_DENIED) / sizeof(ALWAYS_DENIED[0]); i++)
		if (strcmp(ALWAYS_DENIED[i], name) == 0)
			return true;
	return false;
}

static bool is_open_call(const char *name)
{
	return strcmp(name, "open") == 0 || strcmp(name, "openat") == 0 || strcmp(name, "openat2") == 0 ||
	       strcmp(name, "creat") == 0;
}

static int add_allow(scmp_filter_ctx ctx, const char *name, bool brokered_opens, uint64_t families,
		     struct zviz_error *err)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return zv_fail(err, ZVIZ_E_SECCOMP, 0, "seccomp allowlist: unknown syscall `%s`", name);
	if (zv_sc_always_denied(name))
		return 0;
	if (brokered_opens && is_open_call(name))
		return 0; /* the broker sees every open: it serves the brokered paths */
	int rc;
	if (strcmp(name, "clone") == 0) {
		/* Threads and processes yes, new namespaces no. */
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, NS_FLAGS, 0));
	} else if (strcmp(name, "socket") == 0 || strcmp(name, "socketpair") == 0) {
		/* Only the address families the profile names. vsock is not namespaced (inside a
		 * microVM it reaches the hypervisor's host services past layer E), and most other
		 * families are kernel code no function needs. The comparison is on all 64 bits:
		 * the kernel reads an int, so a value with high bits set is refused even when its
		 * low half names an allowed family — the safe way to disagree. Every other
		 * family reaches the default action: the broker counts it and answers
		 * EAFNOSUPPORT. With no family allowed the call is simply never allowed. */
		rc = 0;
		for (int f = 0; f < 64 && rc == 0; f++)
			if (families & ((uint64_t)1 << f))
				rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, (uint64_t)f));
	} else if (strcmp(name, "seccomp") == 0) {
		/* A function may add filters of its own (sandboxes in sandboxes, a runtime's own
		 * hardening), but never a listener. While ours is open the kernel refuses a second
		 * one anyway (EBUSY); once ours is closed (the supervisor died, or its handling
		 * failed and fail-closed ended it), a listener of the function's own would receive
		 * the calls we route to notification — every call outside the allowlist, the
		 * always-denied ones included — and could answer them "continue". The flags are
		 * an unsigned int to the kernel; the bit tested is in its low half. */
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
				      SCMP_A1(SCMP_CMP_MASKED_EQ, (uint64_t)SECCOMP_FILTER_FLAG_NEW_LISTENER, 0));
	} else if (strcmp(name, "personality") == 0) {
		/* Querying (0xffffffff) and PER_LINUX only: no READ_IMPLIES_EXEC, no ADDR_NO_RANDOMIZE. */
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, 0xffffffffULL));
		if (rc == 0)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, 0));
	} else {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
	}
	if (rc < 0 && rc != -EEXIST)
		return zv_fail(err, ZVIZ_E_SECCOMP, -rc, "seccomp: allow `%s`", name);
	return 0;
}

/* Prefix: arch check, x32 kill, ioctl command check. Jump offsets count from the next
 * instruction; KILL, DENY and the libseccomp program follow in that order. */
static const struct sock_filter PREFIX[] = {
	/* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	/* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 0, 7),
	/* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	/* 3 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, X32_SYSCALL_BIT, 5, 0),
	/* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 5),
	/* 5 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])), /* low half (LE) */
	/* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, 1, 0),
	/* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, 0, 2),
	/* 8 DENY */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
	/* 9 KILL */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	/* 10: libseccomp's program */
};

int zv_sc_compile(const struct zv_spec *s, struct zv_seccomp *sc, struct zviz_error *err)
{
	memset(sc, 0, sizeof(*sc));
	if (!(s->seccomp_flags & ZV_SC_ENABLED))
		return 0;
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_NOTIFY);
	if (!ctx)
		return zv_fail(err, ZVIZ_E_SECCOMP, ENOMEM, "seccomp_init");
	int rc = 0, memfd = -1;
	bool brokered = s->nbroker_files > 0;
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) < 0 ||
	    (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0) {
		rc = zv_fail(err, ZVIZ_E_SECCOMP, -rc, "seccomp: set filter attributes");
		goto out;
	}
	for (size_t i = 0; i < sizeof(ALWAYS_ALLOWED) / sizeof(ALWAYS_ALLOWED[0]); i++)
		if ((rc = add_allow(ctx, ALWAYS_ALLOWED[i], false, 0, err)) < 0)
			goto out;
	for (size_t i = 0; i < s->nsc_allow; i++)
		if ((rc = add_allow(ctx, s->sc_allow[i], brokered, s->sc_families, err)) < 0)
			goto out;

	/* libseccomp 2.5 exports to an fd only; a memfd keeps it off any file system. */
	memfd = (int)syscall(SYS_memfd_create, "zviz-bpf", MFD_CLOEXEC);
	if (memfd < 0) {
		rc = zv_fail(err, ZVIZ_E_SECCOMP, errno, "memfd_create for the BPF program");
		goto out;
	}
	if ((rc = seccomp_export_bpf(ctx, memfd)) < 0) {
		rc = zv_fail(err, ZVIZ_E_SECCOMP, -rc, "seccomp_export_bpf");
		goto out;
	}
	off_t size = lseek(memfd, 0, SEEK_END);
	size_t prefix = sizeof(PREFIX) / sizeof(PREFIX[0]);
	size_t body = (size_t)size / sizeof(struct sock_filter);
	if (size <= 0 || (size_t)size % sizeof(struct sock_filter) != 0 || prefix + body > BPF_MAXINSNS) {
		rc = zv_fail(err, ZVIZ_E_SECCOMP, 0, "seccomp: exported program of %lld bytes is unusable", (long long)size);
		goto out;
	}
	sc->prog = calloc(prefix + body, sizeof(struct sock_filter));
	if (!sc->prog) {
		rc = zv_fail(err, ZVIZ_E_SECCOMP, ENOMEM, "allocate BPF program");
		goto out;
	}
	memcpy(sc->prog, PREFIX, sizeof(PREFIX));
	if (pread(memfd, sc->prog + prefix, (size_t)size, 0) != size) {
		rc = zv_fail(err, ZVIZ_E_SECCOMP, errno, "read back BPF program");
		goto out;
	}
	sc->len = (unsigned short)(prefix + body);
	rc = 0;
out:
	if (memfd >= 0)
		close(memfd);
	seccomp_release(ctx);
	if (rc < 0) {
		free(sc->prog);
		sc->prog = NULL;
	}
	return rc;
}

int zv_sc_load(const struct zv_seccomp *sc, int broker_sock, struct zviz_error *err)
{
	if (!sc->prog)
		return 0;
	struct sock_fprog fprog = { .len = sc->len, .filter = sc->prog };
	int listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
	if (listener < 0)
		return zv_fail(err, ZVIZ_E_SECCOMP, errno, "load seccomp filter of %u instructions", sc->len);
	/* From here on every syscall is filtered. Hand the listener to the supervisor; it stays
	 * alive in flight until the supervisor's loop receives it (it dies with the socket). */
	char dummy = 'L';
	struct iovec iov = { .iov_base = &dummy, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &listener, sizeof(int));
	ssize_t n = sendmsg(broker_sock, &msg, MSG_NOSIGNAL);
	int e = errno;
	close(listener);
	close(broker_sock);
	if (n != 1)
		return zv_fail(err, ZVIZ_E_SECCOMP, e, "hand the seccomp listener to the supervisor");
	return 0;
}

void zv_sc_free(struct zv_seccomp *sc)
{
	free(sc->prog);
	sc->prog = NULL;
}
