/* internal.h — shared by the library and the supervisor; never installed. */
#ifndef ZVIZ_INTERNAL_H
#define ZVIZ_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zviz.h"

#define ZV_HIDDEN __attribute__((visibility("hidden")))
#define ZV_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- error model (error.c) ---------------------------------------------------------- */

/* Fills err and returns -code. sys_errno 0 means "no system call involved". */
ZV_HIDDEN int zv_fail(struct zviz_error *err, int code, int sys_errno, const char *fmt, ...) ZV_PRINTF(4, 5);
ZV_HIDDEN void zv_error_clear(struct zviz_error *err);
ZV_HIDDEN uint64_t zv_now_ns(void);

/* ---- control protocol (proto.c) -------------------------------------------------------
 * Library ↔ supervisor over a SOCK_STREAM socketpair. Every message is a frame header
 * followed by `len` payload bytes. The supervisor never trusts the size the peer claims
 * beyond ZV_MAX_FRAME. */

#define ZV_FRAME_MAGIC 0x7a76697au /* "zviz" */
#define ZV_MAX_FRAME (64u << 20)

enum zv_frame_type {
	ZV_FRAME_SPEC = 1,   /* lib → sup: encoded spec */
	ZV_FRAME_READY = 2,  /* sup → lib: sandbox created and parked */
	ZV_FRAME_GO = 3,     /* lib → sup: release the function */
	ZV_FRAME_RESULT = 4, /* sup → lib: struct zviz_result, then stdout, then stderr */
	ZV_FRAME_ERROR = 5,  /* sup → lib: struct zviz_error */
	ZV_FRAME_KILL = 6,   /* lib → sup: kill the sandbox now */
	ZV_FRAME_OUTPUT = 7, /* sup → lib, streaming only: u32 stream (1 stdout, 2 stderr), bytes */
};

struct zv_frame {
	uint32_t magic;
	uint32_t type;
	uint32_t len;
	uint32_t reserved;
};

ZV_HIDDEN int zv_write_all(int fd, const void *buf, size_t len);
ZV_HIDDEN int zv_read_all(int fd, void *buf, size_t len); /* 0 ok, -1 error, 1 EOF at start */
struct iovec;
ZV_HIDDEN int zv_send_frame(int fd, uint32_t type, const void *payload, size_t len);
ZV_HIDDEN int zv_send_framev(int fd, uint32_t type, const struct iovec *parts, size_t n);
ZV_HIDDEN int zv_recv_header(int fd, struct zv_frame *f); /* as zv_read_all, plus magic check (-2) */
/* Writes text to an existing file (procfs, sysctl) in one write; fails with `code`. */
ZV_HIDDEN int zv_write_text(const char *path, const char *text, int code, struct zviz_error *err);

/* ---- spec (spec.c) --------------------------------------------------------------------
 * The spec is a sequence of TLV records: u16 tag, u16 zero, u32 length, payload.
 * Integers are little-endian; strings carry no NUL. Built by worker-pool/spec.ts. */

enum zv_tag {
	ZV_T_ID = 1,        /* string: invocation id, [A-Za-z0-9-], ≤ 64 */
	ZV_T_ARGV = 2,      /* string, repeated, at least one; argv[0] absolute */
	ZV_T_ENV = 3,       /* string "K=V", repeated */
	ZV_T_FILE = 4,      /* u32 name length, name, content; repeated; written under /fn */
	ZV_T_STDIN = 5,     /* bytes */
	ZV_T_LIMITS = 6,    /* struct zv_limits */
	ZV_T_ROOT_BASE = 7, /* string: empty host directory the new root is mounted on */
	ZV_T_UID_BASE = 8,  /* u32: first host uid of the sandbox id range */
	ZV_T_BIND = 9,      /* u32 source length, source, target: read-only bind, repeated */
	ZV_T_CGROUP = 10,   /* u32 version (1|2), u32 controller length, controller, parent dir; repeated */
	ZV_T_LL_CONF = 11,  /* u32 flags (ZV_LL_*), u32 minimum ABI */
	ZV_T_LL_PATH = 12,  /* u64 access, u32 flags (ZV_LLP_*), path inside the sandbox; repeated */
	ZV_T_LL_PORT = 13,  /* u64 access (bit 0 bind, bit 1 connect), u64 TCP port; repeated */
	ZV_T_APPARMOR = 14, /* string: AppArmor profile to apply at execve */
	ZV_T_SC_CONF = 15,  /* u32 flags (ZV_SC_*), u32 zero, u64 socket families (bit n: AF n allowed) */
	ZV_T_SC_ALLOW = 16, /* string: syscall name the filter allows; repeated */
	ZV_T_BROKER_FILE = 17, /* u32 flags, u32 path length, sandbox path, host source path; repeated */
	ZV_T_NETNS = 18,    /* string: network namespace file to join instead of a private one */
	ZV_T_RESOLV = 19,   /* string: content of the sandbox's /etc/resolv.conf */
	ZV_T_FLAGS = 20,    /* u32 flags (ZV_SF_*) */
	ZV_T_IMAGE = 21,    /* u32 owner uid, u32 owner gid, host path of an image rootfs: the root instead of /usr */
	ZV_T_WORKDIR = 22,  /* string: the function's working directory (default /tmp) */
	ZV_T_WORKSPACE = 23, /* u32 source length, host source, sandbox target: a job's writable workspace */
};

#define ZV_LF_TMP_EXEC (1u << 0)

struct zv_limits {
	uint64_t timeout_ms;
	uint64_t output_bytes;
	uint64_t memory_bytes;
	uint64_t pids;
	uint64_t cpu_millis; /* 1000 = one full CPU */
	uint64_t tmp_bytes;
	uint64_t shm_bytes;
	uint64_t nofile;
	uint64_t fsize_bytes;
	uint32_t flags;
	uint32_t reserved;
};

#define ZV_MAX_ARGS 512
#define ZV_MAX_ENV 256
#define ZV_MAX_FILES 64
#define ZV_MAX_BINDS 32
#define ZV_MAX_CGROUPS 8
#define ZV_MAX_LL_PATHS 64
#define ZV_MAX_LL_PORTS 64

/* Spec flags. WARM: start the function right after setup, before GO; it gets fd 3 to
 * read its work from and fd 4 to answer on (see worker-pool/bootstrap/). */
#define ZV_SF_WARM (1u << 0)
/* REUSE (with WARM): a reusable environment (reuse.c). The runtime serves invocations one
 * at a time: each arrives on fd 3 as a u32 little-endian length and that many bytes, each
 * answer leaves on fd 4 framed the same way; the supervisor resets the sandbox between
 * invocations and parks it again. RESET_TMP: the reset also empties /tmp and /dev/shm. */
#define ZV_SF_REUSE (1u << 1)
#define ZV_SF_RESET_TMP (1u << 2)
#define ZV_SF_ALL (ZV_SF_WARM | ZV_SF_REUSE | ZV_SF_RESET_TMP)

/* GO payload: TLV records like the spec's, all optional. */
enum zv_go_tag {
	ZV_G_LIMITS = 1,  /* struct zv_limits: timeout, output, memory, pids, cpu replace the spec's */
	ZV_G_STDIN = 2,   /* bytes: the function's stdin (replaces the spec's) */
	ZV_G_CONTROL = 3, /* bytes: written to a warm function's fd 3 */
	ZV_G_STREAM = 4,  /* empty: send output as OUTPUT frames while it comes */
	ZV_G_ANSWER = 5,  /* empty: a warm function's answer is complete when its fd 4 closes */
	ZV_G_LOG = 6,     /* u64, not zero: stream output as STREAM does, but as a log: keep none of
			   * it (the result carries no stdout or stderr), and end the invocation
			   * (OUTPUT_LIMIT) past this many bytes of stdout and stderr together; a
			   * cold sandbox only */
};

#define ZV_MAX_SC_ALLOW 512
#define ZV_MAX_BROKER_FILES 16
#define ZV_MAX_BROKERED_BYTES (1u << 20) /* a brokered file (a secret) is served from a memfd copy of at most this */
#define ZV_SC_ENABLED (1u << 0)

struct zv_broker_file {
	char *path;   /* exactly what the sandbox opens */
	char *source; /* host file the broker opens instead */
	uint32_t flags;
};

#define ZV_LL_ENABLED (1u << 0)
#define ZV_LL_BEST_EFFORT (1u << 1)
#define ZV_LL_CONNECT_UNRESTRICTED (1u << 2) /* the network layer alone decides TCP connect */
#define ZV_LLP_OPTIONAL (1u << 0)

struct zv_ll_conf {
	uint32_t flags;
	uint32_t min_abi;
};

struct zv_ll_path {
	char *path;
	uint64_t access;
	uint32_t flags;
};

struct zv_ll_port {
	uint64_t access;
	uint64_t port;
};
#define ZV_MAX_STRING 65536

struct zv_file {
	char *name;
	const uint8_t *data;
	size_t len;
};

struct zv_bind {
	char *source;
	char *target;
};

struct zv_cgroup_parent {
	char *controller; /* "unified" on v2 */
	char *parent;     /* absolute directory under which the sandbox's cgroup is made */
};

struct zv_spec {
	char *id;
	char **argv; /* NULL-terminated */
	size_t argc;
	char **envp; /* NULL-terminated */
	size_t envc;
	struct zv_file *files;
	size_t nfiles;
	const uint8_t *stdin_data;
	size_t stdin_len;
	struct zv_limits limits;
	char *root_base;
	uint32_t uid_base;
	struct zv_bind *binds;
	size_t nbinds;
	uint32_t cgroup_version; /* 0: none */
	struct zv_cgroup_parent *cgroups;
	size_t ncgroups;
	struct zv_ll_conf landlock;
	struct zv_ll_path *ll_paths;
	size_t nll_paths;
	struct zv_ll_port *ll_ports;
	size_t nll_ports;
	char *apparmor_profile;
	uint32_t seccomp_flags;
	uint64_t sc_families; /* bit n: socket()/socketpair() may use address family n */
	char **sc_allow;
	size_t nsc_allow;
	struct zv_broker_file *broker_files;
	size_t nbroker_files;
	char *netns_path;
	char *resolv_conf;
	uint32_t flags;
	/* Image root (ZV_T_IMAGE): the host directory of an unpacked image, mounted read-only
	 * as the sandbox's root; image_uid/image_gid are the image's ids that become the
	 * function's own (through an idmapped mount), the image's 0 becomes the sandbox's 0. */
	char *image_root;
	uint32_t image_uid;
	uint32_t image_gid;
	char *workdir;
	/* Job workspace (ZV_T_WORKSPACE): a host directory (a job's own filesystem) mounted
	 * read-write, idmapped so its files owned by 1000 are the function's. */
	char *workspace_src;
	char *workspace_target;
	bool stream; /* set by GO */
	uint64_t log_bytes; /* set by GO (ZV_G_LOG): 0, or the log's volume limit */
	bool answer_on_reply; /* set by GO: the result is due at the reply channel's EOF */
};

/* Parses buf (which must outlive spec: file data points into it). */
ZV_HIDDEN int zv_spec_parse(const uint8_t *buf, size_t len, struct zv_spec *spec, struct zviz_error *err);
ZV_HIDDEN void zv_spec_free(struct zv_spec *spec);
/* Parses a GO payload into spec (limits, stdin) and control; buf must outlive them. */
ZV_HIDDEN int zv_go_parse(const uint8_t *buf, size_t len, struct zv_spec *spec, const uint8_t **control,
			  size_t *control_len, struct zviz_error *err);

#endif
