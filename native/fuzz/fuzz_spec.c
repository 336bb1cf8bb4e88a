/* libFuzzer target: the spec parser, fed whatever bytes the fuzzer makes. The spec is the
 * one input the supervisor takes from its caller; every byte of it is bounds-checked in
 * spec.c, and this keeps it so (ASan + UBSan catch any read past the buffer, any leak
 * of a half-parsed spec, any undefined arithmetic on the lengths). */
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zv_spec spec;
	struct zviz_error err;
	zv_spec_parse(data, size, &spec, &err);
	zv_spec_free(&spec);
	return 0;
}
