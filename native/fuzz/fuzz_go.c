/* libFuzzer target: the control protocol's other input, the GO payload (limits, stdin,
 * a warm runtime's work, streaming, a job's log), parsed over a valid spec as the supervisor does. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zv_spec spec;
	memset(&spec, 0, sizeof(spec));
	const uint8_t *control = NULL;
	size_t control_len = 0;
	struct zviz_error err;
	if (zv_go_parse(data, size, &spec, &control, &control_len, &err) == 0) {
		/* What the supervisor does next with it: the pointers stay inside the input. */
		if (control && (control < data || control + control_len > data + size))
			__builtin_trap();
		if (spec.stdin_data && (spec.stdin_data < data || spec.stdin_data + spec.stdin_len > data + size))
			__builtin_trap();
	}
	return 0;
}
