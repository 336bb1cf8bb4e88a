/* loop.h — the supervisor's event loop (loop.c), as supervisor.c calls it. */
#ifndef ZVIZ_LOOP_H
#define ZVIZ_LOOP_H

#include "sup.h"

void zv_sup_kill_sandbox(struct sup *s);
int zv_sup_alloc_buffers(struct sup *s, struct zviz_error *err);
int zv_sup_arm_timer(struct sup *s, uint64_t ms, struct zviz_error *err);
/* Runs the loop until the sandbox is gone (or, with until_booted, until a warm runtime
 * is ready). Returns false if the server or the caller is gone (no result to send). */
bool zv_sup_loop(struct sup *s, bool until_booted);
void zv_sup_finish_result(struct sup *s);
/* At GO: start measuring the trusted side's CPU and arm the check of its budget. */
int zv_sup_start_trusted_accounting(struct sup *s, struct zviz_error *err);

#endif
