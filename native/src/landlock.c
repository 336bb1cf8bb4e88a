/* landlock.c — layer C: object-level access control beneath the namespaces.
 *
 * Even a process that finds a way around its mount view (a leaked fd, a bind the
 * profile added, a kernel bug in the mount code) cannot open what the ruleset does not
 * grant. The policy (which path gets which rights, which TCP ports) is data computed on
 * the trusted side from the profile (worker-pool/landlock.ts) and sent in the spec.
 *
 * Three steps, three places:
 *   1. supervisor, before clone: ask the kernel's ABI, create the ruleset with every
 *      right that ABI handles (so anything not granted is denied), add the port rules;
 *   2. sandbox init, after pivot_root: open each granted path *in the new view* with
 *      O_PATH and add it — paths mean what the sandbox sees, not what the host sees;
 *   3. function process, after no_new_privs and just before seccomp + execve:
 *      landlock_restrict_self. Init itself stays unrestricted (it only reaps).
 *
 * The kernel headers of older distributions lack the newer rights, so the constants
 * are spelled out here (values are kernel ABI and never change). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

#define LL_CREATE_RULESET_VERSION (1u << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_RULE_NET_PORT 2

/* Filesystem rights, by the ABI version that introduced them. */
#define LL_FS_ABI1 ((1ull << 13) - 1) /* execute … make_sym */
#define LL_FS_REFER (1ull << 13)      /* ABI 2 */
#define LL_FS_TRUNCATE (1ull << 14)   /* ABI 3 */
#define LL_FS_IOCTL_DEV (1ull << 15)  /* ABI 5 */
/* Rights that make sense on a file (not a directory) in a path-beneath rule. */
#define LL_FS_FILE_RIGHTS ((1ull << 0) | (1ull << 1) | (1ull << 2) | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)
#define LL_NET_BIND_TCP (1ull << 0)   /* ABI 4 */
#define LL_NET_CONNECT_TCP (1ull << 1)
#define LL_SCOPE_ABSTRACT_UNIX (1ull << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL (1ull << 1)

struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

struct ll_path_beneath_attr {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

struct ll_net_port_attr {
	uint64_t allowed_access;
	uint64_t port;
};

int zv_ll_abi(void)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
	return abi < 0 ? 0 : (int)abi;
}

static uint64_t fs_rights_for(int abi)
{
	uint64_t r = LL_FS_ABI1;
	if (abi >= 2)
		r |= LL_FS_REFER;
	if (abi >= 3)
		r |= LL_FS_TRUNCATE;
	if (abi >= 5)
		r |= LL_FS_IOCTL_DEV;
	return r;
}

int zv_ll_prepare(const struct zv_spec *s, struct zv_landlock *ll, struct zviz_error *err)
{
	memset(ll, 0, sizeof(*ll));
	ll->ruleset_fd = -1;
	if (!(s->landlock.flags & ZV_LL_ENABLED))
		return 0;
	ll->abi = zv_ll_abi();
	if (ll->abi < (int)s->landlock.min_abi && !(s->landlock.flags & ZV_LL_BEST_EFFORT))
		return zv_fail(err, ZVIZ_E_LANDLOCK, 0, "Landlock ABI %d is below the profile's minimum %u", ll->abi,
			       s->landlock.min_abi);
	if (ll->abi == 0)
		return 0; /* best effort on a kernel without Landlock: reported by the server */

	struct ll_ruleset_attr attr = {
		.handled_access_fs = fs_rights_for(ll->abi),
		.handled_access_net = ll->abi < 4 ? 0
				      : (s->landlock.flags & ZV_LL_CONNECT_UNRESTRICTED) ? LL_NET_BIND_TCP
									       : (LL_NET_BIND_TCP | LL_NET_CONNECT_TCP),
		.scoped = ll->abi >= 6 ? (LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL) : 0,
	};
	/* Older kernels reject an attr larger than they know; pass the size they expect. */
	size_t size = ll->abi >= 6 ? sizeof(attr) : ll->abi >= 4 ? 2 * sizeof(uint64_t) : sizeof(uint64_t);
	ll->handled_fs = attr.handled_access_fs;
	long fd = syscall(SYS_landlock_create_ruleset, &attr, size, 0);
	if (fd < 0)
		return zv_fail(err, ZVIZ_E_LANDLOCK, errno, "create Landlock ruleset (ABI %d)", ll->abi);
	ll->ruleset_fd = (int)fd;
	if (ll->abi < 4)
		return 0;
	for (size_t i = 0; i < s->nll_ports; i++) {
		struct ll_net_port_attr p = {
			.allowed_access = s->ll_ports[i].access & attr.handled_access_net,
			.port = s->ll_ports[i].port,
		};
		if (p.allowed_access == 0)
			continue;
		if (syscall(SYS_landlock_add_rule, ll->ruleset_fd, LL_RULE_NET_PORT, &p, 0) < 0)
			return zv_fail(err, ZVIZ_E_LANDLOCK, errno, "allow TCP port %llu", (unsigned long long)p.port);
	}
	return 0;
}

int zv_ll_add_paths(const struct zv_spec *s, struct zv_landlock *ll, struct zviz_error *err)
{
	if (ll->ruleset_fd < 0)
		return 0;
	for (size_t i = 0; i < s->nll_paths; i++) {
		const struct zv_ll_path *p = &s->ll_paths[i];
		int fd = open(p->path, O_PATH | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT && (p->flags & ZV_LLP_OPTIONAL))
				continue;
			return zv_fail(err, ZVIZ_E_LANDLOCK, errno, "open Landlock rule path `%s`", p->path);
		}
		struct stat st;
		uint64_t allowed = p->access & ll->handled_fs;
		if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
			allowed &= LL_FS_FILE_RIGHTS;
		struct ll_path_beneath_attr pb = { .allowed_access = allowed, .parent_fd = fd };
		long r = allowed ? syscall(SYS_landlock_add_rule, ll->ruleset_fd, LL_RULE_PATH_BENEATH, &pb, 0) : 0;
		int e = errno;
		close(fd);
		if (r < 0)
			return zv_fail(err, ZVIZ_E_LANDLOCK, e, "add Landlock rule for `%s` (access 0x%llx)", p->path,
				       (unsigned long long)allowed);
	}
	return 0;
}

int zv_ll_enforce(struct zv_landlock *ll, struct zviz_error *err)
{
	if (ll->ruleset_fd < 0)
		return 0;
	/* Needs no_new_privs (set by zv_caps_lock_down): otherwise a setuid binary could run
	 * with the restrictions of a less privileged caller. */
	if (syscall(SYS_landlock_restrict_self, ll->ruleset_fd, 0) < 0)
		return zv_fail(err, ZVIZ_E_LANDLOCK, errno, "enforce Landlock ruleset");
	close(ll->ruleset_fd);
	ll->ruleset_fd = -1;
	return 0;
}
