/* test_spec.c — table-driven tests of zv_spec_parse (src/spec.c).
 *
 * Each case builds a TLV buffer the way worker-pool/spec.ts does (u16 tag LE, u16 zero,
 * u32 length LE, payload; integers little-endian), parses it, and checks either the
 * fields that land in struct zv_spec or the error: its code and a message naming the
 * field. zv_spec_free runs after every case, success or failure, so an ASan build of
 * this file also proves the parser leaks nothing on its error paths:
 *   make -C native BUILD=build-asan OPT='-O1 -g' SAN='-fsanitize=address,undefined' build-asan/test-spec
 */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test_limits.h"

/* ---- TLV builder ---------------------------------------------------------------------- */

struct tlv {
	uint8_t *p;
	size_t len;
	size_t cap;
};

static void put(struct tlv *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		uint8_t *grown = realloc(b->p, cap);
		if (!grown) {
			fprintf(stderr, "test-spec: out of memory\n");
			abort();
		}
		b->p = grown;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void put_u16(struct tlv *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	put(b, x, sizeof(x));
}

static void put_u32(struct tlv *b, uint32_t v)
{
	uint8_t x[4];
	for (int i = 0; i < 4; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	put(b, x, sizeof(x));
}

static void put_u64(struct tlv *b, uint64_t v)
{
	uint8_t x[8];
	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	put(b, x, sizeof(x));
}

static void hdr(struct tlv *b, uint16_t tag, uint16_t reserved, uint32_t len)
{
	put_u16(b, tag);
	put_u16(b, reserved);
	put_u32(b, len);
}

static void rec(struct tlv *b, uint16_t tag, const void *d, size_t n)
{
	hdr(b, tag, 0, (uint32_t)n);
	put(b, d, n);
}

static void rec_str(struct tlv *b, uint16_t tag, const char *s)
{
	rec(b, tag, s, strlen(s));
}

/* u32 length of a, a, then b: the layout of FILE and BIND payloads. */
static void rec_pair(struct tlv *b, uint16_t tag, const char *a, const void *second, size_t second_len)
{
	size_t alen = strlen(a);
	hdr(b, tag, 0, (uint32_t)(4 + alen + second_len));
	put_u32(b, (uint32_t)alen);
	put(b, a, alen);
	put(b, second, second_len);
}

static void rec_bind(struct tlv *b, const char *source, const char *target)
{
	rec_pair(b, ZV_T_BIND, source, target, strlen(target));
}

static void rec_file(struct tlv *b, const char *name, const char *content)
{
	rec_pair(b, ZV_T_FILE, name, content, strlen(content));
}

/* u32 num, u32 length of a, a, then b: the layout of CGROUP (num: version) and BROKER_FILE (num: flags). */
static void rec_num_pair(struct tlv *b, uint16_t tag, uint32_t num, const char *a, const char *second)
{
	size_t alen = strlen(a), blen = strlen(second);
	hdr(b, tag, 0, (uint32_t)(8 + alen + blen));
	put_u32(b, num);
	put_u32(b, (uint32_t)alen);
	put(b, a, alen);
	put(b, second, blen);
}

static void rec_cgroup(struct tlv *b, uint32_t version, const char *controller, const char *parent)
{
	rec_num_pair(b, ZV_T_CGROUP, version, controller, parent);
}

static void rec_broker_file(struct tlv *b, uint32_t flags, const char *path, const char *source)
{
	rec_num_pair(b, ZV_T_BROKER_FILE, flags, path, source);
}

static void rec_u32(struct tlv *b, uint16_t tag, uint32_t v)
{
	hdr(b, tag, 0, 4);
	put_u32(b, v);
}

/* The limits every valid case uses (test_limits.h). */
static const struct zv_limits *const LIM = &TEST_LIMITS;

/* Limits written field by field, little-endian, in struct zv_limits order (as spec.ts does). */
static void rec_limits_of(struct tlv *b, const struct zv_limits *l)
{
	hdr(b, ZV_T_LIMITS, 0, 80);
	put_u64(b, l->timeout_ms);
	put_u64(b, l->output_bytes);
	put_u64(b, l->memory_bytes);
	put_u64(b, l->pids);
	put_u64(b, l->cpu_millis);
	put_u64(b, l->tmp_bytes);
	put_u64(b, l->shm_bytes);
	put_u64(b, l->nofile);
	put_u64(b, l->fsize_bytes);
	put_u32(b, l->flags);
	put_u32(b, l->reserved);
}

#define NO_ID (1u << 0)
#define NO_ARGV (1u << 1)
#define NO_LIMITS (1u << 2)
#define NO_ROOT (1u << 3)
#define NO_UID (1u << 4)

#define ID "inv-0123-abcd"
#define ARGV0 "/usr/bin/node"
#define ROOT "/run/zviz/root"
#define UID 100000u

/* The smallest valid spec, minus the records named in omit. */
static void base(struct tlv *b, unsigned omit)
{
	if (!(omit & NO_ID))
		rec_str(b, ZV_T_ID, ID);
	if (!(omit & NO_ARGV))
		rec_str(b, ZV_T_ARGV, ARGV0);
	if (!(omit & NO_LIMITS))
		rec_limits_of(b, LIM);
	if (!(omit & NO_ROOT))
		rec_str(b, ZV_T_ROOT_BASE, ROOT);
	if (!(omit & NO_UID))
		rec_u32(b, ZV_T_UID_BASE, UID);
}

/* ---- checks ------------------------------------------------------------------------------ */

static int npass, nfail;
static char why[512]; /* first failed expectation of the current case */

ZV_PRINTF(2, 3) static bool expect(bool ok, const char *fmt, ...)
{
	if (!ok && why[0] == '\0') {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
	}
	return ok;
}

#define EXPECT(cond) expect((cond), "%s:%d: %s", __FILE__, __LINE__, #cond)
#define EXPECT_STR(got, want)                                                                            \
	expect((got) != NULL && strcmp((got), (want)) == 0, "%s:%d: %s is `%s`, expected `%s`", __FILE__, \
	       __LINE__, #got, (got) ? (got) : "(null)", (want))
#define EXPECT_U64(got, want)                                                                           \
	expect((uint64_t)(got) == (uint64_t)(want), "%s:%d: %s is %llu, expected %llu", __FILE__, __LINE__, \
	       #got, (unsigned long long)(got), (unsigned long long)(want))

/* ---- cases that must parse ---------------------------------------------------------------- */

static void build_minimal(struct tlv *b)
{
	base(b, 0);
}

static void check_minimal(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_STR(s->id, ID);
	EXPECT_U64(s->argc, 1);
	EXPECT_STR(s->argv[0], ARGV0);
	EXPECT(s->argv[1] == NULL);
	EXPECT_U64(s->envc, 0);
	EXPECT(s->envp != NULL);
	EXPECT_U64(s->nfiles, 0);
	EXPECT(s->stdin_data == NULL);
	EXPECT_U64(s->stdin_len, 0);
	EXPECT_U64(s->limits.timeout_ms, 5000);
	EXPECT_U64(s->limits.output_bytes, 1048576);
	EXPECT_U64(s->limits.memory_bytes, 256ull << 20);
	EXPECT_U64(s->limits.pids, 64);
	EXPECT_U64(s->limits.cpu_millis, 1500);
	EXPECT_U64(s->limits.tmp_bytes, 64ull << 20);
	EXPECT_U64(s->limits.shm_bytes, 16ull << 20);
	EXPECT_U64(s->limits.nofile, 1024);
	EXPECT_U64(s->limits.fsize_bytes, 32ull << 20);
	EXPECT_U64(s->limits.flags, ZV_LF_TMP_EXEC);
	EXPECT_STR(s->root_base, ROOT);
	EXPECT_U64(s->uid_base, UID);
	EXPECT_U64(s->nbinds, 0);
	EXPECT_U64(s->cgroup_version, 0);
	EXPECT_U64(s->ncgroups, 0);
	EXPECT_U64(s->landlock.flags, 0);
	EXPECT_U64(s->nll_paths, 0);
	EXPECT_U64(s->nll_ports, 0);
	EXPECT(s->apparmor_profile == NULL);
}

/* No env record still yields an empty NULL-terminated vector: sandbox.c passes envp to
 * execve as is, so envp[0] must be NULL or execve reads a garbage pointer as the first
 * variable. */
static void check_no_env(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_U64(s->envc, 0);
	EXPECT(s->envp != NULL);
	EXPECT(s->envp != NULL && s->envp[0] == NULL);
}

static const char SCRIPT[] = "console.log(require('fs').readFileSync(0, 'utf8'))";
static const char STDIN[] = "{\"x\":1}";

static void build_full(struct tlv *b)
{
	/* Record order is free: put the mandatory ones last. */
	rec_str(b, ZV_T_ENV, "HOME=/tmp");
	rec_str(b, ZV_T_ENV, "EMPTY=");
	rec_str(b, ZV_T_ENV, "A=b=c");
	rec_file(b, "index.js", SCRIPT);
	rec_file(b, "empty.txt", "");
	rec(b, ZV_T_STDIN, STDIN, strlen(STDIN));
	rec_bind(b, "/etc", "/host/etc");
	rec_cgroup(b, 1, "memory", "/sys/fs/cgroup/memory/zviz");
	rec_cgroup(b, 1, "cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/zviz");
	{
		struct tlv *t = b;
		hdr(t, ZV_T_LL_CONF, 0, 8);
		put_u32(t, ZV_LL_ENABLED | ZV_LL_BEST_EFFORT);
		put_u32(t, 3);
		hdr(t, ZV_T_LL_PATH, 0, 12 + 4);
		put_u64(t, 0x7);
		put_u32(t, ZV_LLP_OPTIONAL);
		put(t, "/usr", 4);
		hdr(t, ZV_T_LL_PORT, 0, 16);
		put_u64(t, 2);
		put_u64(t, 443);
	}
	rec_str(b, ZV_T_APPARMOR, "zviz-fn");
	base(b, 0);
	rec_str(b, ZV_T_ARGV, "/fn/index.js");
	rec_str(b, ZV_T_ARGV, "");
}

static void check_full(const struct zv_spec *s, const struct tlv *b)
{
	EXPECT_U64(s->argc, 3);
	EXPECT_STR(s->argv[0], ARGV0);
	EXPECT_STR(s->argv[1], "/fn/index.js");
	EXPECT_STR(s->argv[2], "");
	EXPECT(s->argv[3] == NULL);
	EXPECT_U64(s->envc, 3);
	EXPECT_STR(s->envp[0], "HOME=/tmp");
	EXPECT_STR(s->envp[1], "EMPTY=");
	EXPECT_STR(s->envp[2], "A=b=c");
	EXPECT(s->envp[3] == NULL);
	EXPECT_U64(s->nfiles, 2);
	EXPECT_STR(s->files[0].name, "index.js");
	EXPECT_U64(s->files[0].len, strlen(SCRIPT));
	/* File content is not copied: it points into the caller's buffer. */
	EXPECT(s->files[0].data >= b->p && s->files[0].data + s->files[0].len <= b->p + b->len);
	EXPECT(memcmp(s->files[0].data, SCRIPT, strlen(SCRIPT)) == 0);
	EXPECT_STR(s->files[1].name, "empty.txt");
	EXPECT_U64(s->files[1].len, 0);
	EXPECT_U64(s->stdin_len, strlen(STDIN));
	EXPECT(s->stdin_data != NULL && memcmp(s->stdin_data, STDIN, strlen(STDIN)) == 0);
	EXPECT_U64(s->nbinds, 1);
	EXPECT_STR(s->binds[0].source, "/etc");
	EXPECT_STR(s->binds[0].target, "/host/etc");
	EXPECT_U64(s->cgroup_version, 1);
	EXPECT_U64(s->ncgroups, 2);
	EXPECT_STR(s->cgroups[0].controller, "memory");
	EXPECT_STR(s->cgroups[0].parent, "/sys/fs/cgroup/memory/zviz");
	EXPECT_STR(s->cgroups[1].controller, "cpu,cpuacct");
	EXPECT_STR(s->cgroups[1].parent, "/sys/fs/cgroup/cpu,cpuacct/zviz");
	EXPECT_U64(s->landlock.flags, ZV_LL_ENABLED | ZV_LL_BEST_EFFORT);
	EXPECT_U64(s->landlock.min_abi, 3);
	EXPECT_U64(s->nll_paths, 1);
	EXPECT_STR(s->ll_paths[0].path, "/usr");
	EXPECT_U64(s->ll_paths[0].access, 0x7);
	EXPECT_U64(s->ll_paths[0].flags, ZV_LLP_OPTIONAL);
	EXPECT_U64(s->nll_ports, 1);
	EXPECT_U64(s->ll_ports[0].access, 2);
	EXPECT_U64(s->ll_ports[0].port, 443);
	EXPECT_STR(s->apparmor_profile, "zviz-fn");
	EXPECT_STR(s->id, ID);
	EXPECT_STR(s->root_base, ROOT);
	EXPECT_U64(s->uid_base, UID);
}

static void build_v2(struct tlv *b)
{
	base(b, 0);
	rec_cgroup(b, 2, "unified", "/sys/fs/cgroup/system.slice/zviz.service/zviz");
}

static void check_v2(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_U64(s->cgroup_version, 2);
	EXPECT_U64(s->ncgroups, 1);
	EXPECT_STR(s->cgroups[0].controller, "unified");
	EXPECT_STR(s->cgroups[0].parent, "/sys/fs/cgroup/system.slice/zviz.service/zviz");
}

static char id64[65];

static void build_id_64(struct tlv *b)
{
	memset(id64, 'a', 64);
	id64[63] = '9';
	id64[0] = 'Z';
	id64[64] = '\0';
	rec_str(b, ZV_T_ID, id64);
	base(b, NO_ID);
}

static void check_id_64(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_STR(s->id, id64);
}

static void build_argv_max(struct tlv *b)
{
	base(b, 0);
	for (int i = 1; i < ZV_MAX_ARGS; i++)
		rec_str(b, ZV_T_ARGV, "x");
}

static void check_argv_max(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_U64(s->argc, ZV_MAX_ARGS);
	EXPECT_STR(s->argv[ZV_MAX_ARGS - 1], "x");
	EXPECT(s->argv[ZV_MAX_ARGS] == NULL);
}

static void build_string_max(struct tlv *b)
{
	base(b, 0);
	char *big = malloc(ZV_MAX_STRING);
	memset(big, 'y', ZV_MAX_STRING);
	rec(b, ZV_T_ARGV, big, ZV_MAX_STRING);
	free(big);
}

static void check_string_max(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_U64(s->argc, 2);
	EXPECT_U64(strlen(s->argv[1]), ZV_MAX_STRING);
}

/* Names that contain dots but are not `.` or `..` are plain file names. */
static void build_dotty_names(struct tlv *b)
{
	base(b, 0);
	rec_file(b, "...", "a");
	rec_file(b, "a..b", "b");
	rec_file(b, ".env", "c");
	rec_bind(b, "/opt/x..y", "/mnt/..data");
}

static void check_dotty_names(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_U64(s->nfiles, 3);
	EXPECT_STR(s->files[0].name, "...");
	EXPECT_STR(s->files[2].name, ".env");
	EXPECT_U64(s->nbinds, 1);
	EXPECT_STR(s->binds[0].target, "/mnt/..data");
}

static void build_empty_stdin(struct tlv *b)
{
	base(b, 0);
	rec(b, ZV_T_STDIN, "", 0);
}

static void check_empty_stdin(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_U64(s->stdin_len, 0);
}

static void build_seccomp(struct tlv *b)
{
	base(b, 0);
	/* flags, reserved, families AF_UNIX | AF_INET | AF_INET6 | AF_VSOCK */
	rec(b, ZV_T_SC_CONF, "\x01\0\0\0" "\0\0\0\0" "\x06\x04\0\0\0\x01\0\0", 16);
	rec_str(b, ZV_T_SC_ALLOW, "read");
	rec_str(b, ZV_T_SC_ALLOW, "write");
	rec_broker_file(b, 0, "/etc/ssl/cert.pem", "/etc/ssl/certs/ca-certificates.crt");
}

static void check_seccomp(const struct zv_spec *s, const struct tlv *b)
{
	(void)b;
	EXPECT_U64(s->seccomp_flags, ZV_SC_ENABLED);
	EXPECT_U64(s->sc_families, (1ull << 1) | (1ull << 2) | (1ull << 10) | (1ull << 40));
	EXPECT_U64(s->nsc_allow, 2);
	EXPECT_STR(s->sc_allow[0], "read");
	EXPECT_STR(s->sc_allow[1], "write");
	EXPECT_U64(s->nbroker_files, 1);
	EXPECT_STR(s->broker_files[0].path, "/etc/ssl/cert.pem");
	EXPECT_STR(s->broker_files[0].source, "/etc/ssl/certs/ca-certificates.crt");
	EXPECT_U64(s->broker_files[0].flags, 0);
}

/* ---- cases that must be rejected ---------------------------------------------------------- */

static void build_empty(struct tlv *b)
{
	(void)b;
}

static void build_trunc_header(struct tlv *b)
{
	base(b, 0);
	put(b, "\x03\x00\x00\x00\x05", 5);
}

static void build_trunc_header_only(struct tlv *b)
{
	put(b, "\x01\x00\x00", 3);
}

static void build_overrun(struct tlv *b)
{
	base(b, 0);
	hdr(b, ZV_T_ENV, 0, 100);
	put(b, "A=b", 3);
}

static void build_overrun_huge(struct tlv *b)
{
	hdr(b, ZV_T_ID, 0, 0xffffffffu);
	put(b, ID, strlen(ID));
}

static void build_reserved(struct tlv *b)
{
	base(b, 0);
	hdr(b, ZV_T_ENV, 1, 3);
	put(b, "A=b", 3);
}

static void build_tag_zero(struct tlv *b)
{
	rec_str(b, 0, "");
	base(b, 0);
}

static void build_no_id(struct tlv *b) { base(b, NO_ID); }
static void build_no_argv(struct tlv *b) { base(b, NO_ARGV); }
static void build_no_root(struct tlv *b) { base(b, NO_ROOT); }
static void build_no_uid(struct tlv *b) { base(b, NO_UID); }
static void build_no_limits(struct tlv *b) { base(b, NO_LIMITS); }

/* One build per limit that must not be zero (output_bytes may be 0). */
static size_t zero_field; /* offset into struct zv_limits */

static void build_zero_limit(struct tlv *b)
{
	struct zv_limits l = *LIM;
	memset((char *)&l + zero_field, 0, sizeof(uint64_t));
	base(b, NO_LIMITS);
	rec_limits_of(b, &l);
}

static void build_limits_short(struct tlv *b)
{
	base(b, NO_LIMITS);
	uint8_t z[79] = { 1 };
	rec(b, ZV_T_LIMITS, z, sizeof(z));
}

static void build_limits_long(struct tlv *b)
{
	base(b, NO_LIMITS);
	uint8_t z[81] = { 1 };
	rec(b, ZV_T_LIMITS, z, sizeof(z));
}

static void build_id_65(struct tlv *b)
{
	char id[66];
	memset(id, 'a', 65);
	id[65] = '\0';
	rec_str(b, ZV_T_ID, id);
	base(b, NO_ID);
}

static void build_string_too_large(struct tlv *b)
{
	base(b, 0);
	char *big = malloc(ZV_MAX_STRING + 1);
	memset(big, 'y', ZV_MAX_STRING + 1);
	rec(b, ZV_T_ARGV, big, ZV_MAX_STRING + 1);
	free(big);
}

static void build_file_name_256(struct tlv *b)
{
	char name[257];
	memset(name, 'f', 256);
	name[256] = '\0';
	base(b, 0);
	rec_file(b, name, "x");
}

static void build_cg_mixed(struct tlv *b)
{
	base(b, 0);
	rec_cgroup(b, 2, "unified", "/sys/fs/cgroup/zviz");
	rec_cgroup(b, 1, "memory", "/sys/fs/cgroup/memory/zviz");
}

static void build_ll_port_range(struct tlv *b)
{
	base(b, 0);
	hdr(b, ZV_T_LL_PORT, 0, 16);
	put_u64(b, 2);
	put_u64(b, 65536);
}

static void build_ll_path_dotdot(struct tlv *b)
{
	base(b, 0);
	hdr(b, ZV_T_LL_PATH, 0, 12 + 6);
	put_u64(b, 1);
	put_u32(b, 0);
	put(b, "/a/../", 6);
}

static void build_sc_name_65(struct tlv *b)
{
	char name[66];
	memset(name, 'r', 65);
	name[65] = '\0';
	base(b, 0);
	rec_str(b, ZV_T_SC_ALLOW, name);
}

/* ---- cases that are one record's value ------------------------------------------------------ */

/* One record on top of the minimal spec, or in place of the base record it `replaces`
 * (then first, as a caller would put it), written `count` times (0: once): every case whose
 * whole point is the value of one record. */
enum rec_kind { R_STR, R_BYTES, R_FILE, R_BIND, R_CGROUP, R_BROKER };

struct record_case {
	const char *name;
	enum rec_kind kind;
	uint16_t tag;      /* R_STR */
	uint32_t version;  /* R_CGROUP */
	const char *a, *b; /* string | bytes | file name, content | bind source, target | cgroup controller, parent | broker path, source */
	size_t len;        /* R_BYTES: of a, NULs included */
	unsigned replaces;
	int count;
	int code; /* 0: ZVIZ_E_INVALID_SPEC */
	const char *needle;
};

/* A payload given as bytes: NULs inside it, lengths that lie, records cut short. */
#define BYTES(lit) .a = (lit), .len = sizeof(lit) - 1
#define CG "/sys/fs/cgroup/zviz"
#define CG_MEM "/sys/fs/cgroup/memory/zviz"

static const struct record_case RECORD_CASES[] = {
	{ "id with characters outside [A-Za-z0-9-]", R_STR, .tag = ZV_T_ID, .a = "bad_id!", .replaces = NO_ID, .needle = "spec id `bad_id!`" },
	{ "id with path characters", R_STR, .tag = ZV_T_ID, .a = "../../etc", .replaces = NO_ID, .needle = "spec id `../../etc`" },
	{ "empty id", R_STR, .tag = ZV_T_ID, .a = "", .replaces = NO_ID, .needle = "spec id" },
	{ "id given twice", R_STR, .tag = ZV_T_ID, .a = "other", .needle = "spec id: given twice" },
	{ "argv[0] not absolute", R_STR, .tag = ZV_T_ARGV, .a = "node", .replaces = NO_ARGV, .needle = "argv[0] must be an absolute path" },
	{ "argv[0] empty", R_STR, .tag = ZV_T_ARGV, .a = "", .replaces = NO_ARGV, .needle = "argv[0] must be an absolute path" },
	{ "env without =", R_STR, .tag = ZV_T_ENV, .a = "FOO", .needle = "spec env `FOO`" },
	{ "env starting with =", R_STR, .tag = ZV_T_ENV, .a = "=value", .needle = "spec env `=value`" },
	{ "empty env string", R_STR, .tag = ZV_T_ENV, .a = "", .needle = "spec env ``" },
	{ "workdir not absolute", R_STR, .tag = ZV_T_WORKDIR, .a = "tmp", .needle = "spec workdir `tmp`" },
	{ "workdir with ..", R_STR, .tag = ZV_T_WORKDIR, .a = "/a/../b", .needle = "spec workdir `/a/../b`" },
	{ "image owner uid 0 (the sandbox's root)", R_BYTES, .tag = ZV_T_IMAGE, BYTES("\0\0\0\0\xe9\x03\0\0/img"), .needle = "spec image owner 0:1001" },
	{ "image owner beyond 65535", R_BYTES, .tag = ZV_T_IMAGE, BYTES("\0\0\x01\0\xe9\x03\0\0/img"), .needle = "spec image owner 65536:1001" },
	{ "image root not absolute", R_BYTES, .tag = ZV_T_IMAGE, BYTES("\xe9\x03\0\0\xe9\x03\0\0img"), .needle = "spec image root `img`" },
	{ "image root is /", R_BYTES, .tag = ZV_T_IMAGE, BYTES("\xe9\x03\0\0\xe9\x03\0\0/"), .needle = "spec image root `/`" },
	{ "image record without a path", R_BYTES, .tag = ZV_T_IMAGE, BYTES("\xe9\x03\0\0"), .needle = "spec image: 4 bytes" },
	{ "workspace source not absolute", R_BYTES, .tag = ZV_T_WORKSPACE, BYTES("\x02\0\0\0ws/workspace"), .needle = "spec workspace `ws` -> `/workspace`" },
	{ "workspace target is /", R_BYTES, .tag = ZV_T_WORKSPACE, BYTES("\x03\0\0\0/ws/"), .needle = "spec workspace `/ws` -> `/`" },
	{ "workspace target with ..", R_BYTES, .tag = ZV_T_WORKSPACE, BYTES("\x03\0\0\0/ws/a/../b"), .needle = "spec workspace `/ws` -> `/a/../b`" },
	{ "workspace record cut short", R_BYTES, .tag = ZV_T_WORKSPACE, BYTES("\x09\0\0\0/ws"), .needle = "spec workspace: truncated record" },
	{ "root base given twice", R_STR, .tag = ZV_T_ROOT_BASE, .a = "/run/other", .needle = "spec root base: given twice" },
	{ "root base relative", R_STR, .tag = ZV_T_ROOT_BASE, .a = "run/zviz/root", .replaces = NO_ROOT, .needle = "spec root base `run/zviz/root`" },
	{ "root base with ..", R_STR, .tag = ZV_T_ROOT_BASE, .a = "/run/zviz/../../etc", .replaces = NO_ROOT, .needle = "spec root base `/run/zviz/../../etc`" },
	{ "apparmor profile with white space", R_STR, .tag = ZV_T_APPARMOR, .a = "zviz fn", .needle = "spec apparmor profile `zviz fn`" },
	{ "seccomp syscall name empty", R_STR, .tag = ZV_T_SC_ALLOW, .a = "", .needle = "spec seccomp syscall name: 0 bytes" },
	{ "unknown tag 99", R_STR, .tag = 99, .a = "x", .needle = "unknown record tag 99" },
	{ "reuse without warm", R_BYTES, .tag = ZV_T_FLAGS, BYTES("\x02\0\0\0"), .needle = "reuse needs a warm runtime" },
	{ "reset tmp without warm", R_BYTES, .tag = ZV_T_FLAGS, BYTES("\x04\0\0\0"), .needle = "reuse needs a warm runtime" },
	{ "an unknown spec flag", R_BYTES, .tag = ZV_T_FLAGS, BYTES("\x09\0\0\0"), .needle = "spec flags 0x9: unknown bits" },
	/* Nested names are fine (lib/util.js); an empty or ".." component is not. */
	{ "file name with an empty component", R_FILE, .a = "a//b", .b = "x", .needle = "spec file name `a//b`" },
	{ "nested file name with ..", R_FILE, .a = "lib/../../x", .b = "x", .needle = "spec file name `lib/../../x`" },
	{ "file name absolute", R_FILE, .a = "/etc/passwd", .b = "x", .needle = "spec file name `/etc/passwd`" },
	{ "file name ..", R_FILE, .a = "..", .b = "x", .needle = "spec file name `..`" },
	{ "file name .", R_FILE, .a = ".", .b = "x", .needle = "spec file name `.`" },
	{ "empty file name", R_FILE, .a = "", .b = "x", .needle = "spec file name ``" },
	{ "bind target /", R_BIND, .a = "/etc", .b = "/", .needle = "spec bind `/etc` -> `/`" },
	/* The same directory as `/`, spelled another way: mnt.c would bind over the new root. */
	{ "bind target // (the root)", R_BIND, .a = "/etc", .b = "//", .needle = "spec bind `/etc` -> `//`" },
	{ "bind target /. (the root)", R_BIND, .a = "/etc", .b = "/.", .needle = "spec bind `/etc` -> `/.`" },
	{ "bind target with a .. component", R_BIND, .a = "/etc", .b = "/usr/../etc", .needle = "spec bind `/etc` -> `/usr/../etc`" },
	{ "bind target ending in ..", R_BIND, .a = "/etc", .b = "/usr/..", .needle = "spec bind `/etc` -> `/usr/..`" },
	{ "bind target starting with /..", R_BIND, .a = "/etc", .b = "/../host", .needle = "spec bind `/etc` -> `/../host`" },
	{ "bind source with a .. component", R_BIND, .a = "/srv/../etc", .b = "/data", .needle = "spec bind `/srv/../etc`" },
	{ "bind target relative", R_BIND, .a = "/etc", .b = "data", .needle = "spec bind `/etc` -> `data`" },
	{ "bind source relative", R_BIND, .a = "etc", .b = "/data", .needle = "spec bind `etc`" },
	{ "cgroup version 3", R_CGROUP, .version = 3, .a = "unified", .b = CG, .needle = "spec cgroup version 3: must be 1 or 2" },
	{ "cgroup version 0", R_CGROUP, .version = 0, .a = "unified", .b = CG, .needle = "spec cgroup version 0: must be 1 or 2" },
	{ "cgroup parent outside /sys/fs/cgroup", R_CGROUP, .version = 2, .a = "unified", .b = "/tmp/zviz", .needle = "parent `/tmp/zviz`: must be under /sys/fs/cgroup" },
	{ "cgroup parent under /sys/fs/cgroupfs", R_CGROUP, .version = 2, .a = "unified", .b = "/sys/fs/cgroupfs/zviz", .needle = "parent `/sys/fs/cgroupfs/zviz`" },
	{ "cgroup parent /sys/fs/cgroup without a slash", R_CGROUP, .version = 2, .a = "unified", .b = "/sys/fs/cgroup", .needle = "parent `/sys/fs/cgroup`" },
	{ "cgroup parent escaping with ..", R_CGROUP, .version = 2, .a = "unified", .b = "/sys/fs/cgroup/../../../etc", .needle = "parent `/sys/fs/cgroup/../../../etc`" },
	{ "cgroup parent relative", R_CGROUP, .version = 2, .a = "unified", .b = "sys/fs/cgroup/zviz", .needle = "parent `sys/fs/cgroup/zviz`" },
	{ "cgroup controller containing /", R_CGROUP, .version = 1, .a = "memory/../pids", .b = CG_MEM, .needle = "spec cgroup `memory/../pids`" },
	{ "cgroup controller empty", R_CGROUP, .version = 1, .a = "", .b = CG_MEM, .needle = "spec cgroup ``" },
	{ "cgroup controller of 33 bytes", R_CGROUP, .version = 1, .a = "cpu,cpuacct,memory,pids,freezer,x", .b = CG_MEM, .needle = "spec cgroup `cpu,cpuacct" },
	{ "brokered file path relative", R_BROKER, .a = "etc/x", .b = "/etc/hosts", .needle = "spec brokered file `etc/x`" },
	{ "brokered file source with ..", R_BROKER, .a = "/etc/x", .b = "/etc/../root/.ssh/id_rsa", .needle = "spec brokered file `/etc/x` <- `/etc/../root/.ssh/id_rsa`" },
	{ "NUL inside argv", R_BYTES, .tag = ZV_T_ARGV, BYTES("/bin/a\0b"), .needle = "spec argv: contains a NUL byte" },
	{ "NUL inside id", R_BYTES, .tag = ZV_T_ID, BYTES("ab\0cd"), .replaces = NO_ID, .needle = "spec id: contains a NUL byte" },
	{ "NUL inside env", R_BYTES, .tag = ZV_T_ENV, BYTES("A=b\0LD_PRELOAD=/x"), .needle = "spec env: contains a NUL byte" },
	{ "NUL inside root base", R_BYTES, .tag = ZV_T_ROOT_BASE, BYTES("/run\0/x"), .replaces = NO_ROOT, .needle = "spec root base: contains a NUL byte" },
	{ "NUL inside file name", R_BYTES, .tag = ZV_T_FILE, BYTES("\x05\0\0\0" "a\0b.j" "x"), .needle = "spec file name: contains a NUL byte" },
	{ "NUL inside bind target", R_BYTES, .tag = ZV_T_BIND, BYTES("\x04\0\0\0" "/etc" "/x\0y"), .needle = "spec bind target: contains a NUL byte" },
	{ "NUL inside cgroup parent", R_BYTES, .tag = ZV_T_CGROUP, BYTES("\x02\0\0\0" "\x07\0\0\0" "unified" "/sys/fs/cgroup/a\0b"), .needle = "spec cgroup parent: contains a NUL byte" },
	{ "uid base 0", R_BYTES, .tag = ZV_T_UID_BASE, BYTES("\0\0\0\0"), .replaces = NO_UID, .needle = "uid base" },
	{ "uid base of 2 bytes", R_BYTES, .tag = ZV_T_UID_BASE, BYTES("\x01\x02"), .replaces = NO_UID, .needle = "spec uid base: 2 bytes, expected 4" },
	{ "file record shorter than its u32 name length", R_BYTES, .tag = ZV_T_FILE, BYTES("\x01\x00\x00"), .needle = "spec file: truncated record of 3 bytes" },
	{ "file name length past the record", R_BYTES, .tag = ZV_T_FILE, BYTES("\x03\0\0\0" "ab"), .needle = "spec file: truncated record of 6 bytes" },
	{ "bind record shorter than its u32", R_BYTES, .tag = ZV_T_BIND, BYTES("\x00\x00"), .needle = "spec bind: truncated record of 2 bytes" },
	{ "cgroup record shorter than its version", R_BYTES, .tag = ZV_T_CGROUP, BYTES("\x02\x00\x00"), .needle = "spec cgroup: truncated record of 3 bytes" },
	{ "cgroup controller length past the record", R_BYTES, .tag = ZV_T_CGROUP, BYTES("\x02\0\0\0" "\x32\0\0\0" "abc"), .needle = "spec cgroup: truncated record of 11 bytes" },
	{ "seccomp conf of 3 bytes", R_BYTES, .tag = ZV_T_SC_CONF, BYTES("\x01\x00\x00"), .needle = "spec seccomp: 3 bytes, expected 16" },
	{ "seccomp conf of 4 bytes (no socket families)", R_BYTES, .tag = ZV_T_SC_CONF, BYTES("\x01\0\0\0"), .needle = "spec seccomp: 4 bytes, expected 16" },
	{ "seccomp conf with its reserved word set", R_BYTES, .tag = ZV_T_SC_CONF, BYTES("\x01\0\0\0" "\x01\0\0\0" "\x02\0\0\0\0\0\0\0"), .needle = "spec seccomp: reserved word is 1, expected 0" },
	{ "NUL inside seccomp syscall name", R_BYTES, .tag = ZV_T_SC_ALLOW, BYTES("read\0x"), .needle = "spec seccomp syscall name: contains a NUL byte" },
	{ "brokered file record truncated", R_BYTES, .tag = ZV_T_BROKER_FILE, BYTES("\0\0\0\0" "\x09\x00"), .needle = "spec brokered file: truncated record of 6 bytes" },
	{ "stdin given twice", R_BYTES, .tag = ZV_T_STDIN, BYTES("a"), .count = 2, .needle = "spec stdin: given twice" },
	{ "empty stdin given twice", R_BYTES, .tag = ZV_T_STDIN, BYTES(""), .count = 2, .needle = "spec stdin: given twice" },
	/* One past each count limit (argv: the base spec has argv[0] already). */
	{ "too many argv (ZV_MAX_ARGS + 1)", R_STR, .tag = ZV_T_ARGV, .a = "x", .count = ZV_MAX_ARGS, .code = ZVIZ_E_TOO_LARGE, .needle = "spec argv: more than 512 entries" },
	{ "too many env (ZV_MAX_ENV + 1)", R_STR, .tag = ZV_T_ENV, .a = "A=b", .count = ZV_MAX_ENV + 1, .code = ZVIZ_E_TOO_LARGE, .needle = "spec env: more than 256 entries" },
	{ "too many seccomp names (ZV_MAX_SC_ALLOW + 1)", R_STR, .tag = ZV_T_SC_ALLOW, .a = "read", .count = ZV_MAX_SC_ALLOW + 1, .code = ZVIZ_E_TOO_LARGE, .needle = "spec seccomp allowlist: more than 512 entries" },
	{ "too many files (ZV_MAX_FILES + 1)", R_FILE, .a = "f", .b = "x", .count = ZV_MAX_FILES + 1, .code = ZVIZ_E_TOO_LARGE, .needle = "spec files: more than 64 entries" },
	{ "too many binds (ZV_MAX_BINDS + 1)", R_BIND, .a = "/etc", .b = "/data", .count = ZV_MAX_BINDS + 1, .code = ZVIZ_E_TOO_LARGE, .needle = "spec binds: more than 32 entries" },
	{ "too many cgroups (ZV_MAX_CGROUPS + 1)", R_CGROUP, .version = 1, .a = "memory", .b = CG_MEM, .count = ZV_MAX_CGROUPS + 1, .code = ZVIZ_E_TOO_LARGE, .needle = "spec cgroups: more than 8 entries" },
	{ "too many brokered files (ZV_MAX_BROKER_FILES + 1)", R_BROKER, .a = "/etc/x", .b = "/etc/hosts", .count = ZV_MAX_BROKER_FILES + 1, .code = ZVIZ_E_TOO_LARGE, .needle = "spec brokered files: more than 16 entries" },
};

static const struct record_case *current_record;

static void put_record(struct tlv *b, const struct record_case *r)
{
	switch (r->kind) {
	case R_STR:
		rec_str(b, r->tag, r->a);
		break;
	case R_BYTES:
		rec(b, r->tag, r->a, r->len);
		break;
	case R_FILE:
		rec_file(b, r->a, r->b);
		break;
	case R_BIND:
		rec_bind(b, r->a, r->b);
		break;
	case R_CGROUP:
		rec_cgroup(b, r->version, r->a, r->b);
		break;
	case R_BROKER:
		rec_broker_file(b, 0, r->a, r->b);
		break;
	}
}

static void build_record(struct tlv *b)
{
	const struct record_case *r = current_record;
	if (!r->replaces)
		base(b, 0);
	for (int i = 0; i < (r->count ? r->count : 1); i++)
		put_record(b, r);
	if (r->replaces)
		base(b, r->replaces);
}

/* ---- the table ----------------------------------------------------------------------------- */

struct spec_case {
	const char *name;
	void (*build)(struct tlv *b);
	int code;                                                /* 0: must parse */
	const char *needle;                                      /* must appear in err.msg */
	void (*check)(const struct zv_spec *s, const struct tlv *b); /* for code 0 */
};

#define OK(n, b, c) { n, b, ZVIZ_OK, NULL, c }
#define BAD(n, b, needle) { n, b, ZVIZ_E_INVALID_SPEC, needle, NULL }
#define BIG(n, b, needle) { n, b, ZVIZ_E_TOO_LARGE, needle, NULL }

static const struct spec_case CASES[] = {
	OK("minimal spec: id, argv, limits, root base and uid base land in struct zv_spec", build_minimal, check_minimal),
	OK("spec without env records has envp = { NULL } for execve", build_minimal, check_no_env),
	OK("full spec: env, files, stdin, binds, v1 cgroups, landlock, apparmor, in any order", build_full, check_full),
	OK("v2 cgroup record: version 2, controller `unified`", build_v2, check_v2),
	OK("id of exactly 64 characters is accepted", build_id_64, check_id_64),
	OK("exactly ZV_MAX_ARGS argv entries are accepted", build_argv_max, check_argv_max),
	OK("a string of exactly ZV_MAX_STRING bytes is accepted", build_string_max, check_string_max),
	OK("names with dots that are not . or .. are accepted", build_dotty_names, check_dotty_names),
	OK("empty stdin record is accepted", build_empty_stdin, check_empty_stdin),
	OK("seccomp records: conf flags, allowlist, brokered file", build_seccomp, check_seccomp),

	BAD("empty buffer is rejected: missing id", build_empty, "missing id"),
	BAD("truncated record header after valid records", build_trunc_header, "truncated record header at offset"),
	BAD("buffer shorter than one header", build_trunc_header_only, "truncated record header at offset 0"),
	BAD("record length overruns the buffer", build_overrun, "overruns"),
	BAD("record length 0xffffffff overruns the buffer", build_overrun_huge, "record of 4294967295 bytes at offset 0 overruns"),
	BAD("non-zero reserved field", build_reserved, "reserved field 1"),
	BAD("tag 0 is unknown", build_tag_zero, "unknown record tag 0"),
	BAD("missing id", build_no_id, "missing id"),
	BAD("missing argv", build_no_argv, "argv[0]"),
	BAD("missing root base", build_no_root, "missing root base"),
	BAD("missing uid base", build_no_uid, "uid base"),
	BAD("missing limits", build_no_limits, "spec limits"),
	BAD("limits of 79 bytes", build_limits_short, "spec limits: 79 bytes, expected 80"),
	BAD("limits of 81 bytes", build_limits_long, "spec limits: 81 bytes, expected 80"),
	BAD("id of 65 characters", build_id_65, "spec id `aaaa"),
	BAD("file name of 256 bytes", build_file_name_256, "spec file name `ffff"),
	BAD("mixed cgroup versions", build_cg_mixed, "spec cgroup: mixes versions 2 and 1"),
	BAD("landlock port 65536", build_ll_port_range, "spec landlock port 65536"),
	BAD("landlock path with ..", build_ll_path_dotdot, "spec landlock path `/a/../`"),
	BAD("seccomp syscall name of 65 bytes", build_sc_name_65, "spec seccomp syscall name: 65 bytes"),
	BIG("a string of ZV_MAX_STRING + 1 bytes", build_string_too_large, "spec argv: 65537 bytes exceeds 65536"),
};

static void run_case(const char *name, void (*build)(struct tlv *b), int code, const char *needle,
		     void (*check)(const struct zv_spec *s, const struct tlv *b))
{
	struct tlv b = { 0 };
	struct zv_spec s;
	struct zviz_error err = { .code = -1, .msg = "untouched" };
	why[0] = '\0';
	build(&b);
	/* An empty builder still needs a non-NULL pointer for the parser's arithmetic. */
	static const uint8_t none[1];
	int rc = zv_spec_parse(b.p ? b.p : none, b.len, &s, &err);
	if (code == ZVIZ_OK) {
		if (expect(rc == 0, "rc %d, err %d `%s`", rc, err.code, err.msg))
			check(&s, &b);
	} else {
		expect(rc == -code, "rc %d, expected %d (msg `%s`)", rc, -code, err.msg);
		expect(err.code == code, "err.code %d, expected %d (msg `%s`)", err.code, code, err.msg);
		expect(strstr(err.msg, needle) != NULL, "msg `%s` lacks `%s`", err.msg, needle);
	}
	zv_spec_free(&s);
	free(b.p);
	if (why[0] == '\0') {
		npass++;
		printf("ok   %s\n", name);
	} else {
		nfail++;
		printf("FAIL %s: %s\n", name, why);
	}
}

int main(void)
{
	/* Fill fresh heap memory with a non-zero pattern, so a vector slot the parser forgot
	 * to initialise reads as garbage here too, not only under ASan (which does the same). */
	mallopt(M_PERTURB, 0x5a);

	for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++)
		run_case(CASES[i].name, CASES[i].build, CASES[i].code, CASES[i].needle, CASES[i].check);

	for (size_t i = 0; i < sizeof(RECORD_CASES) / sizeof(RECORD_CASES[0]); i++) {
		current_record = &RECORD_CASES[i];
		int code = current_record->code ? current_record->code : ZVIZ_E_INVALID_SPEC;
		run_case(current_record->name, build_record, code, current_record->needle, NULL);
	}

	/* Each limit that the parser requires, zeroed on its own. */
	static const struct {
		const char *field;
		size_t off;
	} zero[] = {
		{ "timeout_ms", offsetof(struct zv_limits, timeout_ms) },
		{ "memory_bytes", offsetof(struct zv_limits, memory_bytes) },
		{ "pids", offsetof(struct zv_limits, pids) },
		{ "cpu_millis", offsetof(struct zv_limits, cpu_millis) },
		{ "tmp_bytes", offsetof(struct zv_limits, tmp_bytes) },
		{ "shm_bytes", offsetof(struct zv_limits, shm_bytes) },
		{ "nofile", offsetof(struct zv_limits, nofile) },
		{ "fsize_bytes", offsetof(struct zv_limits, fsize_bytes) },
	};
	for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++) {
		char name[96];
		snprintf(name, sizeof(name), "zero limit %s", zero[i].field);
		zero_field = zero[i].off;
		run_case(name, build_zero_limit, ZVIZ_E_INVALID_SPEC, "spec limits: missing or zero", NULL);
	}

	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
