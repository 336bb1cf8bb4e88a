/* check.h — the native tests' one assertion: prints "ok" or "FAIL" and the description,
 * counts failures (each test's main returns non-zero when there was one). */
#ifndef ZVIZ_TESTS_CHECK_H
#define ZVIZ_TESTS_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond, ...)                                                                                     \
	do {                                                                                                 \
		if (cond) {                                                                                  \
			printf("ok   ");                                                                     \
		} else {                                                                                     \
			printf("FAIL ");                                                                     \
			failures++;                                                                          \
		}                                                                                            \
		printf(__VA_ARGS__);                                                                         \
		printf("\n");                                                                                \
	} while (0)

#endif
