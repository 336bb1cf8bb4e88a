/* net.c — layer A/E: the sandbox's own network namespace has only `lo`; bring it up so
 * the function can talk to itself on 127.0.0.1 (which is not the host's loopback). */
#include <errno.h>
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
