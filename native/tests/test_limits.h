/* test_limits.h — the limits every C test's spec carries. Each value is distinct, so a
 * field written to or read from the wrong place shows. */
#ifndef ZV_TEST_LIMITS_H
#define ZV_TEST_LIMITS_H

#include "internal.h"

static const struct zv_limits TEST_LIMITS = {
	.timeout_ms = 5000,
	.output_bytes = 1048576,
	.memory_bytes = 256ull << 20,
	.pids = 64,
	.cpu_millis = 1500,
	.tmp_bytes = 64ull << 20,
	.shm_bytes = 16ull << 20,
	.nofile = 1024,
	.fsize_bytes = 32ull << 20,
	.flags = ZV_LF_TMP_EXEC,
	.reserved = 0,
};

#endif
