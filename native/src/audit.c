/* audit.c — seccomp kills, as the kernel reports them.
 *
 * A process killed by the filter (wrong architecture, x32) cannot be asked what it
 * called, and the supervisor's notification handling never sees it. The kernel logs every seccomp kill to its ring
 * buffer as an audit record (type 1326) with the caller's host uid, architecture and
 * syscall number. The supervisor notes the end of /dev/kmsg before it releases the
 * function and afterwards reads what was added, keeping the records of its sandbox's
 * uid, which no other live sandbox shares. The kernel rate-limits these messages, so
 * under a flood some may be missing; the SIGSYS exit status is always reported.
 *
 * The kernel hands audit records to the ring buffer from its own thread (kauditd), a
 * moment after the kill itself: the result is due as soon as the function has ended, so
 * for a function that died of SIGSYS the supervisor waits for its record, at most
 * KILL_RECORD_WAIT_MS (a rate-limited record never comes). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"

int zv_kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd >= 0)
		lseek(fd, 0, SEEK_END);
	return fd;
}

static bool field(const char *rec, const char *key, char *out, size_t cap)
{
	const char *p = strstr(rec, key);
	if (!p)
		return false;
	p += strlen(key);
	size_t n = strcspn(p, " \n");
	if (n == 0 || n >= cap)
		return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

#define KILL_RECORD_WAIT_MS 250

void zv_kmsg_collect(int fd, uint32_t host_uid, bool want_kill, struct zviz_audit *out, uint32_t *n,
		     uint64_t *dropped)
{
	if (fd < 0)
		return;
	char rec[2048], want_uid[32], v[32];
	snprintf(want_uid, sizeof(want_uid), "%u", host_uid);
	uint64_t deadline = zv_now_ns() + KILL_RECORD_WAIT_MS * 1000000ull;
	for (int i = 0; i < 4096; i++) {
		ssize_t len = read(fd, rec, sizeof(rec) - 1);
		if (len < 0 && errno == EPIPE)
			continue; /* overwritten records: skip ahead */
		if (len < 0 && errno == EAGAIN && want_kill) {
			uint64_t now = zv_now_ns();
			if (now >= deadline)
				break;
			struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
			poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
			continue;
		}
		if (len <= 0)
			break;
		rec[len] = '\0';
		if (!strstr(rec, "type=1326") || !field(rec, " uid=", v, sizeof(v)) || strcmp(v, want_uid) != 0)
			continue;
		char arch_s[32] = "", nr_s[32] = "";
		field(rec, " arch=", arch_s, sizeof(arch_s));
		field(rec, " syscall=", nr_s, sizeof(nr_s));
		uint32_t arch = (uint32_t)strtoul(arch_s, NULL, 16);
		int nr = nr_s[0] ? atoi(nr_s) : -1;
		want_kill = false; /* the kill's own record is here: read on only what is there */
		for (uint32_t j = 0; j < *n; j++)
			if (out[j].kind == ZVIZ_AUDIT_SECCOMP && out[j].action == ZVIZ_AUDIT_KILL && out[j].nr == nr) {
				out[j].count++;
				goto next;
			}
		if (*n >= ZVIZ_MAX_AUDIT) {
			(*dropped)++;
			continue;
		}
		struct zviz_audit *a = &out[(*n)++];
		memset(a, 0, sizeof(*a));
		a->kind = ZVIZ_AUDIT_SECCOMP;
		a->action = ZVIZ_AUDIT_KILL;
		a->nr = nr;
		a->count = 1;
		/* Name it in the caller's architecture: an i386 call number means something
		 * else natively. x32 calls carry the 0x40000000 bit in the number. */
		char *name = seccomp_syscall_resolve_num_arch(arch ? arch : SCMP_ARCH_NATIVE, nr & ~0x40000000);
		const char *abi = arch == SCMP_ARCH_X86 ? "i386:" : (nr >= 0 && (nr & 0x40000000)) ? "x32:" : "";
		snprintf(a->name, sizeof(a->name), "%s%s", abi, name ? name : "unknown");
		free(name);
	next:;
	}
	close(fd);
}
