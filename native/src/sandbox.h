/* sandbox.h — the isolation layers, one file each, and the one place that orders them
 * (sandbox.c). Only the supervisor links these. */
#ifndef ZVIZ_SANDBOX_H
#define ZVIZ_SANDBOX_H

#include <stdbool.h>
#include <sys/types.h>

#include "internal.h"

/* Ids inside the sandbox. Setup runs as 0 (mapped to an unprivileged host uid); the
 * function runs as ZV_SANDBOX_UID. */
#define ZV_SANDBOX_UID 1000
#define ZV_SANDBOX_GID 1000
#define ZV_HOSTNAME "zviz"

/* Messages from the sandbox's init to its supervisor (over a pipe). */
enum zv_child_msg_type {
	ZV_MSG_READY = 1, /* setup done, parked until GO */
	ZV_MSG_ERROR = 2, /* setup or exec failed; payload is the error */
	ZV_MSG_EXIT = 3,  /* the function's main process ended; payload has its wait status */
};

struct zv_child_msg {
	int32_t type;
	int32_t wait_status;
	struct zviz_error err;
};

/* landlock.c: ruleset made by the supervisor, filled by init, enforced by the function. */
struct zv_landlock {
	int abi;        /* 0: no Landlock (disabled by profile or kernel) */
	int ruleset_fd; /* -1 when nothing will be enforced */
	uint64_t handled_fs;
};

int zv_ll_abi(void);
int zv_ll_prepare(const struct zv_spec *s, struct zv_landlock *ll, struct zviz_error *err);
int zv_ll_add_paths(const struct zv_spec *s, struct zv_landlock *ll, struct zviz_error *err);
int zv_ll_enforce(struct zv_landlock *ll, struct zviz_error *err);

/* seccomp.c: compiled in the supervisor, loaded by the function process last. */
struct sock_filter;
struct zv_seccomp {
	struct sock_filter *prog; /* NULL: no filter */
	unsigned short len;
};

bool zv_sc_always_denied(const char *name);
int zv_sc_compile(const struct zv_spec *s, struct zv_seccomp *sc, struct zviz_error *err);
int zv_sc_load(const struct zv_seccomp *sc, int broker_sock, struct zviz_error *err);
void zv_sc_free(struct zv_seccomp *sc);

/* broker.c: the supervisor's seccomp notification handling (no process of its own).
 * prepare (before clone) makes the socket the function process hands its listener
 * over; every supervisor loop polls zv_broker_pollfd and calls zv_broker_serve with what
 * poll said; audit (once the answer is complete) copies the decisions; finish closes it. */
#define ZV_BROKER_BATCH 64 /* notifications served per poll wake-up at most */
struct seccomp_notif;
struct seccomp_notif_resp;
struct zv_broker {
	const struct zv_spec *spec;
	int sock;       /* our end of the hand-over socket, until the listener came (or EOF) */
	int sock_child; /* the function process's end (closed in the supervisor after clone) */
	int listener;   /* -1 before it came, and once every filtered task is gone */
	bool failed;    /* serving failed and the listener was closed: the loop ends the sandbox */
	int copies[ZV_MAX_BROKER_FILES]; /* sealed memfd copy per brokered file, made at its first open; -1 */
	struct seccomp_notif *req;
	struct seccomp_notif_resp *resp;
	size_t req_size, resp_size;
	/* Deduplicated decisions since the last mark (a reused environment's GO). */
	uint32_t n, dropped;
	struct zviz_audit records[ZVIZ_MAX_AUDIT];
};

int zv_broker_prepare(struct zv_broker *h, const struct zv_spec *spec, const struct zv_seccomp *sc,
		      struct zviz_error *err);
/* The fd a loop polls for POLLIN (the socket, then the listener), or -1. */
int zv_broker_pollfd(const struct zv_broker *h);
/* What poll reported for that fd: receives the listener, or serves at most
 * ZV_BROKER_BATCH notifications. Sets h->failed when the listener had to be closed. */
void zv_broker_serve(struct zv_broker *h, short revents);
void zv_broker_audit(const struct zv_broker *h, struct zviz_audit *out, uint32_t *n, uint64_t *dropped);
/* From now on zv_broker_audit reports only decisions made after this call. */
void zv_broker_audit_mark(struct zv_broker *h);
void zv_broker_finish(struct zv_broker *h);

/* audit.c (supervisor side): seccomp kills from the kernel's audit records. */
int zv_kmsg_open(void);
/* want_kill: the function died of SIGSYS; wait briefly for the kill's record (audit.c). */
void zv_kmsg_collect(int fd, uint32_t host_uid, bool want_kill, struct zviz_audit *out, uint32_t *n,
		     uint64_t *dropped);

/* apparmor.c (function process): AppArmor profile at the next execve, if one is named. */
int zv_apparmor_change_onexec(const char *profile, struct zviz_error *err);

/* Everything the child needs, prepared by the supervisor before clone(). */
struct zv_child_ctx {
	const struct zv_spec *spec;
	int sync_rd;   /* supervisor → init: 'M' (maps written), 'G' (go) */
	int msg_wr;    /* init → supervisor: struct zv_child_msg */
	int stdin_rd;  /* become the function's fds 0, 1, 2 */
	int stdout_wr;
	int stderr_wr;
	int cap_last;  /* highest capability number the kernel knows */
	int close_from; /* lowest supervisor-only fd; everything >= it except ours is closed */
	struct zv_landlock *ll;
	const struct zv_seccomp *sc;
	int broker_sock; /* -1 without a filter: sends the seccomp listener to the supervisor */
	bool joined_netns; /* the network namespace is ZViz's, already configured: hands off */
	int ctl_rd;   /* warm only (else -1): becomes the function's fd 3 */
	int reply_wr; /* warm only (else -1): becomes the function's fd 4 */
	int image_fd; /* image root only (else -1): the detached mount that becomes the root */
	int workspace_fd; /* job only (else -1): the detached, idmapped workspace mount */
};

/* sandbox.c: runs in the clone()d child (the sandbox's init, pid 1 of its pid namespace). */
__attribute__((noreturn)) void zv_sandbox_main(const struct zv_child_ctx *ctx);

/* userns.c (supervisor side) */
int zv_userns_write_maps(pid_t child, uint32_t host_base, struct zviz_error *err);
int zv_userns_idmap_fd(uint32_t host_base, uint32_t owner_uid, uint32_t owner_gid, struct zviz_error *err);

/* image.c (store side, `zviz-supervisor --sanitize-image`) */
int zv_image_sanitize(const char *rootfs, struct zviz_error *err);

/* mnt.c (child side) */
/* Supervisor side, before clone3: a detached, read-only, nosuid, nodev clone of the image
 * root, idmapped where the kernel and filesystem can (else the documented fallback, see
 * mnt.c); *fd is -1 without one. */
int zv_mnt_open_image(const struct zv_spec *s, uint32_t host_base, int *fd, struct zviz_error *err);
/* Supervisor side, after clone3 and the child's maps: the idmap zv_mnt_open_image left to
 * the sandbox's own user namespace, if any. */
int zv_mnt_idmap_pending(pid_t child, struct zviz_error *err);
/* Supervisor side, before clone3: a detached, idmapped, nosuid, nodev clone of the job's
 * workspace; *fd is -1 without one. */
int zv_mnt_open_workspace(const struct zv_spec *s, uint32_t host_base, int *fd, struct zviz_error *err);
int zv_mnt_build_root(const struct zv_spec *s, int image_fd, int ws_fd, struct zviz_error *err);

/* caps.c (child side). drop_to_uid: also switch to the sandbox uid/gid. */
int zv_caps_lock_down(int cap_last, bool drop_to_uid, struct zviz_error *err);

/* process.c (child side) */
int zv_proc_set_rlimits(const struct zv_limits *l, struct zviz_error *err);
int zv_proc_stdio(int in, int out, int errfd, struct zviz_error *err);
int zv_proc_place(int src, int dst, struct zviz_error *err);
int zv_proc_write_sysctl(const char *path, const char *value, struct zviz_error *err);
int zv_proc_close_fds_from(int lowest, const int *keep, size_t nkeep, struct zviz_error *err);

/* net.c */
int zv_net_loopback_up(struct zviz_error *err);                        /* child side */
int zv_net_join(const char *path, struct zviz_error *err);              /* supervisor side */

/* cgroup.c (supervisor side) */
struct zv_cg_dir {
	char controller[32];
	char path[4096];
	int dirfd;
};

struct zv_cgroup {
	uint32_t version; /* 0: no cgroup */
	size_t n;
	struct zv_cg_dir dir[ZV_MAX_CGROUPS];
};

int zv_cg_create(struct zv_cgroup *cg, const struct zv_spec *s, struct zviz_error *err);
int zv_cg_make_dirs(struct zv_cgroup *cg, const struct zv_spec *s, struct zviz_error *err);
int zv_cg_apply_limits(struct zv_cgroup *cg, const struct zv_limits *l, struct zviz_error *err);
int zv_cg_clone_fd(const struct zv_cgroup *cg);
int zv_cg_attach(struct zv_cgroup *cg, pid_t pid, struct zviz_error *err);
void zv_cg_kill(struct zv_cgroup *cg);
/* Whether zv_cg_stats reports the CPU of the whole tree (v2 always, v1 with cpuacct). */
bool zv_cg_counts_cpu(struct zv_cgroup *cg);
void zv_cg_stats(struct zv_cgroup *cg, struct zviz_result *r);
int zv_cg_destroy(struct zv_cgroup *cg, struct zviz_error *err);
/* A small file (beneath dirfd, or AT_FDCWD) into buf, NUL-terminated: its length, or -1. */
ssize_t zv_read_small(int dirfd, const char *file, char *buf, size_t cap);
/* Reusable environments (reuse.c). */
ssize_t zv_cg_procs(struct zv_cgroup *cg, pid_t *out, size_t cap);
bool zv_cg_peak_reset(struct zv_cgroup *cg, int *peak_fd);
bool zv_cg_peak_read(struct zv_cgroup *cg, int peak_fd, uint64_t *out);
bool zv_cg_memory_current(struct zv_cgroup *cg, uint64_t *out);

#endif
