/* net.c — layer A/E: the sandbox's own network namespace has only `lo`; bring it up so
 * the function can talk to itself on 127.0.0.1 (which is not the host's loopback). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sandbox.h"

int zv_net_loopback_up(struct zviz_error *err)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return zv_fail(err, ZVIZ_E_NAMESPACE, errno, "socket for `lo`");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	int r = 0;
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		r = zv_fail(err, ZVIZ_E_NAMESPACE, errno, "read flags of `lo`");
	else {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			r = zv_fail(err, ZVIZ_E_NAMESPACE, errno, "bring `lo` up");
	}
	close(fd);
	return r;
}

/* Egress mode: the server made and configured a namespace owned by the host's user
 * namespace (veth, address, route, nftables in the router). The supervisor joins it
 * before clone(), so the sandbox is born inside it without CAP_NET_ADMIN over it: it can
 * neither change its addresses and routes nor see the rules. IPv6 is switched off there
 * — the egress policy is IPv4 only, and a v6 path must not stay open beside it. */
int zv_net_join(const char *path, struct zviz_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return zv_fail(err, ZVIZ_E_NETWORK, errno, "open network namespace `%s`", path);
	int r = setns(fd, CLONE_NEWNET);
	int e = errno;
	close(fd);
	if (r < 0)
		return zv_fail(err, ZVIZ_E_NETWORK, e, "join network namespace `%s`", path);
	static const char *const v6[] = { "/proc/sys/net/ipv6/conf/all/disable_ipv6",
					  "/proc/sys/net/ipv6/conf/default/disable_ipv6" };
	for (size_t i = 0; i < 2; i++) {
		int f = open(v6[i], O_WRONLY | O_CLOEXEC);
		if (f < 0) {
			if (errno == ENOENT)
				continue; /* kernel without IPv6 */
			return zv_fail(err, ZVIZ_E_NETWORK, errno, "open `%s`", v6[i]);
		}
		ssize_t n = write(f, "1", 1);
		e = errno;
		close(f);
		if (n != 1)
			return zv_fail(err, ZVIZ_E_NETWORK, e, "disable IPv6 via `%s`", v6[i]);
	}
	return 0;
}
