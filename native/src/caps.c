/* caps.c — layer A: no capabilities, no way back.
 *
 * Order matters. Securebits and the bounding set need CAP_SETPCAP, so they come first,
 * while the child still holds its (namespace-local) capabilities. Locking the bits
 * means no later setuid(0) or file capability can hand privileges back. The uid change
 * then clears permitted/effective (we lock KEEP_CAPS off and leave the setuid fix-up on),
 * an explicit capset clears inheritable, and no_new_privs makes setuid binaries and file
 * capabilities inert at every later execve. */
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

static int capset_zero(struct zviz_error *err)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		return zv_fail(err, ZVIZ_E_CAPS, errno, "capset all sets to empty");
	return 0;
}

static int verify_empty(struct zviz_error *err)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) < 0)
		return zv_fail(err, ZVIZ_E_CAPS, errno, "capget");
	for (int i = 0; i < 2; i++)
		if (data[i].effective || data[i].permitted || data[i].inheritable)
			return zv_fail(err, ZVIZ_E_CAPS, 0, "capabilities still held after drop (word %d)", i);
	return 0;
}

int zv_caps_lock_down(int cap_last, bool drop_to_uid, struct zviz_error *err)
{
	unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |
			     SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
	if (prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) < 0)
		return zv_fail(err, ZVIZ_E_CAPS, errno, "lock securebits 0x%lx", bits);
	for (int cap = 0; cap <= cap_last; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return zv_fail(err, ZVIZ_E_CAPS, errno, "drop capability %d from the bounding set", cap);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
		return zv_fail(err, ZVIZ_E_CAPS, errno, "clear ambient capabilities");
	if (drop_to_uid) {
		if (setgroups(0, NULL) < 0)
			return zv_fail(err, ZVIZ_E_CAPS, errno, "clear supplementary groups");
		if (setresgid(ZV_SANDBOX_GID, ZV_SANDBOX_GID, ZV_SANDBOX_GID) < 0)
			return zv_fail(err, ZVIZ_E_CAPS, errno, "setresgid %d", ZV_SANDBOX_GID);
		if (setresuid(ZV_SANDBOX_UID, ZV_SANDBOX_UID, ZV_SANDBOX_UID) < 0)
			return zv_fail(err, ZVIZ_E_CAPS, errno, "setresuid %d", ZV_SANDBOX_UID);
	}
	int r = capset_zero(err);
	if (r < 0)
		return r;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return zv_fail(err, ZVIZ_E_CAPS, errno, "set no_new_privs");
	return verify_empty(err);
}
