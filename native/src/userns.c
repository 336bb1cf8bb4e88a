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
	return zv_write_text(path, map, ZVIZ_E_NAMESPACE, err);
}
