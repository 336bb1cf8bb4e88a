/* error.c — the one error model: fill a caller-owned struct, return a negative code. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

int zv_fail(struct zviz_error *err, int code, int sys_errno, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		if (n < 0)
			n = 0;
		size_t used = (size_t)n < sizeof(err->msg) ? (size_t)n : sizeof(err->msg) - 1;
		if (sys_errno != 0) {
			/* strerrordesc_np is a table lookup: safe after clone() and without locale. */
			const char *desc = strerrordesc_np(sys_errno);
			snprintf(err->msg + used, sizeof(err->msg) - used, ": %s", desc ? desc : "Unknown error");
		}
		err->code = code;
		err->sys_errno = sys_errno;
	}
	return -code;
}

void zv_error_clear(struct zviz_error *err)
{
	if (err) {
		err->code = ZVIZ_OK;
		err->sys_errno = 0;
		err->msg[0] = '\0';
	}
}

uint64_t zv_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
