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
/* At a warm runtime's boot, and at GO: start measuring the trusted side's CPU (unless the
 * boot started it: the boot is its first invocation's) and arm the check of its budget for
 * the current limits. */
int zv_sup_start_trusted_accounting(struct sup *s, struct zviz_error *err);
/* Parked: no periodic check (nothing polls it); zv_sup_check_trusted_cpu after serving. */
void zv_sup_pause_trusted_budget(struct sup *s);
/* Kills the sandbox (TRUSTED_CPU) if the trusted side's CPU is past its budget. */
void zv_sup_check_trusted_cpu(struct sup *s);

/* The supervisor's own CPU so far (the trusted side's share of an invocation). */
uint64_t zv_self_cpu_ns(void);

/* The length in a frame header on fd 3 and fd 4: a u32, little-endian. */
static inline uint32_t zv_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* supervisor.c, shared with reuse.c: wait for GO and apply it, send RESULT. */
int zv_sup_wait_for_go(struct sup *s, struct zviz_error *err);
int zv_sup_apply_go(struct sup *s, struct zviz_error *err);
void zv_sup_send_result(struct sup *s);

/* reuse.c: serve invocations until one ends the environment. Returns 0, or a negative
 * code when GO could not be applied (err filled, already sent). */
int zv_reuse_serve(struct sup *s, struct zviz_error *err);

#endif
