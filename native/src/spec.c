/* spec.c — parse the TLV spec sent by the untrusted-input side (the HTTP request, via
 * TypeScript). Everything here is bounds-checked against the buffer and against fixed
 * limits; this is the code the fuzz target drives. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct cursor {
	const uint8_t *p;
	size_t left;
};

static uint32_t rd_u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static uint16_t rd_u16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/* Copies len bytes into a fresh NUL-terminated string; rejects embedded NULs. */
static char *dup_str(const uint8_t *p, size_t len, struct zviz_error *err, const char *what)
{
	if (len > ZV_MAX_STRING) {
		zv_fail(err, ZVIZ_E_TOO_LARGE, 0, "spec %s: %zu bytes exceeds %d", what, len, ZV_MAX_STRING);
		return NULL;
	}
	if (memchr(p, '\0', len) != NULL) {
		zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec %s: contains a NUL byte", what);
		return NULL;
	}
	char *s = malloc(len + 1);
	if (!s) {
		zv_fail(err, ZVIZ_E_SYSTEM, ENOMEM, "spec %s: allocate %zu bytes", what, len + 1);
		return NULL;
	}
	memcpy(s, p, len);
	s[len] = '\0';
	return s;
}

static int push_ptr(void ***arr, size_t *n, size_t max, size_t elem, struct zviz_error *err, const char *what)
{
	if (*n >= max)
		return zv_fail(err, ZVIZ_E_TOO_LARGE, 0, "spec %s: more than %zu entries", what, max);
	/* +1 keeps string vectors NULL-terminated. */
	void *grown = realloc(*arr, (*n + 2) * elem);
	if (!grown)
		return zv_fail(err, ZVIZ_E_SYSTEM, ENOMEM, "spec %s: grow to %zu entries", what, *n + 2);
	*arr = grown;
	/* Zero the new entry and the terminator: a vector is NULL-terminated at all times. */
	memset((char *)grown + *n * elem, 0, 2 * elem);
	return 0;
}

/* A payload split as: u32 first length, first bytes, rest. */
static uint64_t rd_u64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static int split2(const uint8_t *p, size_t len, const uint8_t **a, size_t *alen, const uint8_t **b, size_t *blen)
{
	if (len < 4)
		return -1;
	uint32_t l = rd_u32(p);
	if (l > len - 4)
		return -1;
	*a = p + 4;
	*alen = l;
	*b = p + 4 + l;
	*blen = len - 4 - l;
	return 0;
}

static bool valid_id(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return true;
}

/* A path relative to /fn: canonical, no "." or ".." component, at most 8 levels. */
static bool valid_file_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 1024 || s[0] == '/')
		return false;
	int depth = 0;
	for (const char *p = s; *p;) {
		size_t len = strcspn(p, "/");
		if (len == 0 || len > 255 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (++depth > 8)
			return false;
		p += len;
		if (*p == '/')
			p++;
		else
			break;
	}
	return s[n - 1] != '/';
}

/* Absolute and canonical: no empty, "." or ".." component, no trailing slash. A bind
 * target of "//" or "/." would otherwise name the new root itself. */
static bool valid_abs_path(const char *s)
{
	size_t n = strlen(s);
	if (s[0] != '/' || n >= 4096)
		return false;
	if (n == 1)
		return true;
	for (const char *p = s; *p;) {
		const char *c = p + 1; /* component after this slash */
		size_t len = strcspn(c, "/");
		if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		p = c + len;
	}
	return true;
}

static int parse_record(struct zv_spec *s, uint16_t tag, const uint8_t *p, size_t len, struct zviz_error *err)
{
	const uint8_t *a, *b;
	size_t alen, blen;
	int r;

	switch ((enum zv_tag)tag) {
	case ZV_T_ID:
		if (s->id)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec id: given twice");
		if (!(s->id = dup_str(p, len, err, "id")))
			return -err->code;
		if (!valid_id(s->id))
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec id `%.64s`: must be 1-64 of [A-Za-z0-9-]", s->id);
		return 0;
	case ZV_T_ARGV:
		if ((r = push_ptr((void ***)&s->argv, &s->argc, ZV_MAX_ARGS, sizeof(char *), err, "argv")) < 0)
			return r;
		if (!(s->argv[s->argc] = dup_str(p, len, err, "argv")))
			return -err->code;
		s->argc++;
		return 0;
	case ZV_T_ENV:
		if ((r = push_ptr((void ***)&s->envp, &s->envc, ZV_MAX_ENV, sizeof(char *), err, "env")) < 0)
			return r;
		if (!(s->envp[s->envc] = dup_str(p, len, err, "env")))
			return -err->code;
		if (s->envp[s->envc][0] == '=' || strchr(s->envp[s->envc], '=') == NULL) {
			s->envc++;
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec env `%.64s`: must be NAME=VALUE",
				       s->envp[s->envc - 1]);
		}
		s->envc++;
		return 0;
	case ZV_T_FILE: {
		if (split2(p, len, &a, &alen, &b, &blen) < 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec file: truncated record of %zu bytes", len);
		if ((r = push_ptr((void ***)&s->files, &s->nfiles, ZV_MAX_FILES, sizeof(struct zv_file), err, "files")) < 0)
			return r;
		struct zv_file *f = &s->files[s->nfiles];
		if (!(f->name = dup_str(a, alen, err, "file name")))
			return -err->code;
		s->nfiles++;
		if (!valid_file_name(f->name))
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec file name `%.64s`: must be a relative path without . or .. (at most 8 levels)", f->name);
		f->data = b;
		f->len = blen;
		return 0;
	}
	case ZV_T_STDIN:
		if (s->stdin_data)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec stdin: given twice");
		s->stdin_data = p;
		s->stdin_len = len;
		return 0;
	case ZV_T_LIMITS:
		if (s->limits.timeout_ms != 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec limits: given twice");
		if (len != sizeof(s->limits))
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec limits: %zu bytes, expected %zu", len,
				       sizeof(s->limits));
		memcpy(&s->limits, p, len);
		return 0;
	case ZV_T_ROOT_BASE:
		if (s->root_base)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec root base: given twice");
		if (!(s->root_base = dup_str(p, len, err, "root base")))
			return -err->code;
		if (!valid_abs_path(s->root_base))
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec root base `%.128s`: must be an absolute path",
				       s->root_base);
		return 0;
	case ZV_T_UID_BASE:
		if (len != 4)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec uid base: %zu bytes, expected 4", len);
		s->uid_base = rd_u32(p);
		return 0;
	case ZV_T_BIND: {
		if (split2(p, len, &a, &alen, &b, &blen) < 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec bind: truncated record of %zu bytes", len);
		if ((r = push_ptr((void ***)&s->binds, &s->nbinds, ZV_MAX_BINDS, sizeof(struct zv_bind), err, "binds")) < 0)
			return r;
		struct zv_bind *bd = &s->binds[s->nbinds];
		bd->source = dup_str(a, alen, err, "bind source");
		bd->target = bd->source ? dup_str(b, blen, err, "bind target") : NULL;
		s->nbinds++;
		if (!bd->source || !bd->target)
			return -err->code;
		if (!valid_abs_path(bd->source) || !valid_abs_path(bd->target) || strcmp(bd->target, "/") == 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec bind `%.100s` -> `%.100s`: paths must be absolute, not / and without ..",
				       bd->source, bd->target);
		return 0;
	}
	case ZV_T_CGROUP: {
		if (len < 4)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec cgroup: truncated record of %zu bytes", len);
		uint32_t version = rd_u32(p);
		if (version != 1 && version != 2)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec cgroup version %u: must be 1 or 2", version);
		if (s->cgroup_version && s->cgroup_version != version)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec cgroup: mixes versions %u and %u", s->cgroup_version,
				       version);
		s->cgroup_version = version;
		if (split2(p + 4, len - 4, &a, &alen, &b, &blen) < 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec cgroup: truncated record of %zu bytes", len);
		if ((r = push_ptr((void ***)&s->cgroups, &s->ncgroups, ZV_MAX_CGROUPS, sizeof(struct zv_cgroup_parent), err,
				  "cgroups")) < 0)
			return r;
		struct zv_cgroup_parent *cg = &s->cgroups[s->ncgroups];
		cg->controller = dup_str(a, alen, err, "cgroup controller");
		cg->parent = cg->controller ? dup_str(b, blen, err, "cgroup parent") : NULL;
		s->ncgroups++;
		if (!cg->controller || !cg->parent)
			return -err->code;
		if (!valid_abs_path(cg->parent) || strncmp(cg->parent, "/sys/fs/cgroup/", 15) != 0 ||
		    strlen(cg->controller) >= 32 || strchr(cg->controller, '/') != NULL || cg->controller[0] == '\0')
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec cgroup `%.32s` parent `%.128s`: must be under /sys/fs/cgroup",
				       cg->controller, cg->parent);
		return 0;
	}
	case ZV_T_LL_CONF:
		if (len != 8)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec landlock: %zu bytes, expected 8", len);
		s->landlock.flags = rd_u32(p);
		s->landlock.min_abi = rd_u32(p + 4);
		if (s->landlock.min_abi > 64)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec landlock minimum ABI %u: out of range",
				       s->landlock.min_abi);
		return 0;
	case ZV_T_LL_PATH: {
		if (len < 13)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec landlock path: truncated record of %zu bytes", len);
		if ((r = push_ptr((void ***)&s->ll_paths, &s->nll_paths, ZV_MAX_LL_PATHS, sizeof(struct zv_ll_path), err,
				  "landlock paths")) < 0)
			return r;
		struct zv_ll_path *lp = &s->ll_paths[s->nll_paths];
		lp->access = rd_u64(p);
		lp->flags = rd_u32(p + 8);
		if (!(lp->path = dup_str(p + 12, len - 12, err, "landlock path")))
			return -err->code;
		s->nll_paths++;
		if (!valid_abs_path(lp->path))
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec landlock path `%.128s`: must be absolute, without ..",
				       lp->path);
		return 0;
	}
	case ZV_T_LL_PORT:
		if (len != 16)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec landlock port: %zu bytes, expected 16", len);
		if ((r = push_ptr((void ***)&s->ll_ports, &s->nll_ports, ZV_MAX_LL_PORTS, sizeof(struct zv_ll_port), err,
				  "landlock ports")) < 0)
			return r;
		s->ll_ports[s->nll_ports].access = rd_u64(p);
		s->ll_ports[s->nll_ports].port = rd_u64(p + 8);
		if (s->ll_ports[s->nll_ports++].port > 65535)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec landlock port %llu: out of range",
				       (unsigned long long)s->ll_ports[s->nll_ports - 1].port);
		return 0;
	case ZV_T_APPARMOR:
		if (s->apparmor_profile)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec apparmor profile: given twice");
		if (len == 0 || len > 128)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec apparmor profile: %zu bytes, expected 1-128", len);
		if (!(s->apparmor_profile = dup_str(p, len, err, "apparmor profile")))
			return -err->code;
		if (strpbrk(s->apparmor_profile, " \t\n") != NULL)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec apparmor profile `%.64s`: contains white space",
				       s->apparmor_profile);
		return 0;
	case ZV_T_SC_CONF:
		if (len != 16)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec seccomp: %zu bytes, expected 16", len);
		s->seccomp_flags = rd_u32(p);
		if (rd_u32(p + 4) != 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec seccomp: reserved word is %u, expected 0", rd_u32(p + 4));
		s->sc_families = rd_u64(p + 8);
		return 0;
	case ZV_T_SC_ALLOW:
		if ((r = push_ptr((void ***)&s->sc_allow, &s->nsc_allow, ZV_MAX_SC_ALLOW, sizeof(char *), err,
				  "seccomp allowlist")) < 0)
			return r;
		if (len == 0 || len > 64)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec seccomp syscall name: %zu bytes, expected 1-64", len);
		if (!(s->sc_allow[s->nsc_allow] = dup_str(p, len, err, "seccomp syscall name")))
			return -err->code;
		s->nsc_allow++;
		return 0;
	case ZV_T_BROKER_FILE: {
		if (len < 4)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec brokered file: truncated record of %zu bytes", len);
		if (split2(p + 4, len - 4, &a, &alen, &b, &blen) < 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec brokered file: truncated record of %zu bytes", len);
		if ((r = push_ptr((void ***)&s->broker_files, &s->nbroker_files, ZV_MAX_BROKER_FILES,
				  sizeof(struct zv_broker_file), err, "brokered files")) < 0)
			return r;
		struct zv_broker_file *bf = &s->broker_files[s->nbroker_files];
		bf->flags = rd_u32(p);
		bf->path = dup_str(a, alen, err, "brokered path");
		bf->source = bf->path ? dup_str(b, blen, err, "brokered source") : NULL;
		s->nbroker_files++;
		if (!bf->path || !bf->source)
			return -err->code;
		if (!valid_abs_path(bf->path) || !valid_abs_path(bf->source) || strcmp(bf->source, "/") == 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec brokered file `%.100s` <- `%.100s`: paths must be absolute, without ..",
				       bf->path, bf->source);
		return 0;
	}
	case ZV_T_NETNS:
		if (s->netns_path)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec netns: given twice");
		if (!(s->netns_path = dup_str(p, len, err, "netns")))
			return -err->code;
		if (!valid_abs_path(s->netns_path) || strncmp(s->netns_path, "/run/netns/", 11) != 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec netns `%.128s`: must be under /run/netns/",
				       s->netns_path);
		return 0;
	case ZV_T_FLAGS:
		if (len != 4)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec flags: %zu bytes, expected 4", len);
		s->flags = rd_u32(p);
		if (s->flags & ~ZV_SF_ALL)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec flags 0x%x: unknown bits", s->flags);
		if ((s->flags & (ZV_SF_REUSE | ZV_SF_RESET_TMP)) && !(s->flags & ZV_SF_WARM))
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec flags 0x%x: reuse needs a warm runtime", s->flags);
		return 0;
	case ZV_T_IMAGE:
		if (s->image_root)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec image: given twice");
		if (len < 9)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec image: %zu bytes, expected ids and a path", len);
		s->image_uid = rd_u32(p);
		s->image_gid = rd_u32(p + 4);
		/* The owner ids become the function's host id through a one-id mapping; 0 stays the
		 * sandbox's root, so it cannot also be the function's. */
		if (s->image_uid == 0 || s->image_gid == 0 || s->image_uid > 65535 || s->image_gid > 65535)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec image owner %u:%u: must be within 1..65535",
				       s->image_uid, s->image_gid);
		if (!(s->image_root = dup_str(p + 8, len - 8, err, "image root")))
			return -err->code;
		if (!valid_abs_path(s->image_root) || strcmp(s->image_root, "/") == 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec image root `%.128s`: must be absolute, canonical, not /",
				       s->image_root);
		return 0;
	case ZV_T_WORKDIR:
		if (s->workdir)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec workdir: given twice");
		if (!(s->workdir = dup_str(p, len, err, "workdir")))
			return -err->code;
		if (!valid_abs_path(s->workdir))
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec workdir `%.128s`: must be absolute and canonical",
				       s->workdir);
		return 0;
	case ZV_T_WORKSPACE:
		if (s->workspace_src)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec workspace: given twice");
		if (split2(p, len, &a, &alen, &b, &blen) < 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec workspace: truncated record of %zu bytes", len);
		if (!(s->workspace_src = dup_str(a, alen, err, "workspace source")))
			return -err->code;
		if (!(s->workspace_target = dup_str(b, blen, err, "workspace target")))
			return -err->code;
		if (!valid_abs_path(s->workspace_src) || !valid_abs_path(s->workspace_target) ||
		    strcmp(s->workspace_src, "/") == 0 || strcmp(s->workspace_target, "/") == 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0,
				       "spec workspace `%.100s` -> `%.100s`: paths must be absolute, canonical, not /",
				       s->workspace_src, s->workspace_target);
		return 0;
	case ZV_T_RESOLV:
		if (s->resolv_conf)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec resolv.conf: given twice");
		if (len > 4096)
			return zv_fail(err, ZVIZ_E_TOO_LARGE, 0, "spec resolv.conf: %zu bytes exceeds 4096", len);
		if (!(s->resolv_conf = dup_str(p, len, err, "resolv.conf")))
			return -err->code;
		return 0;
	}
	return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec: unknown record tag %u", tag);
}

int zv_spec_parse(const uint8_t *buf, size_t len, struct zv_spec *s, struct zviz_error *err)
{
	memset(s, 0, sizeof(*s));
	size_t off = 0;
	while (off < len) {
		if (len - off < 8)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec: truncated record header at offset %zu", off);
		uint16_t tag = rd_u16(buf + off);
		uint16_t zero = rd_u16(buf + off + 2);
		uint32_t rlen = rd_u32(buf + off + 4);
		off += 8;
		if (zero != 0)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec: reserved field %u at offset %zu", zero, off - 6);
		if (rlen > len - off)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec: record of %u bytes at offset %zu overruns %zu", rlen,
				       off - 8, len);
		int r = parse_record(s, tag, buf + off, rlen, err);
		if (r < 0)
			return r;
		off += rlen;
	}
	if (!s->id)
		return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec: missing id");
	if (s->argc == 0 || s->argv[0][0] != '/')
		return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec: argv[0] must be an absolute path");
	if (!s->root_base)
		return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec: missing root base");
	if (s->uid_base == 0)
		return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec: uid base must not be 0");
	const struct zv_limits *l = &s->limits;
	if (l->timeout_ms == 0 || l->memory_bytes == 0 || l->pids == 0 || l->cpu_millis == 0 || l->tmp_bytes == 0 ||
	    l->shm_bytes == 0 || l->nofile == 0 || l->fsize_bytes == 0)
		return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "spec limits: missing or zero");
	if (!s->envp && push_ptr((void ***)&s->envp, &s->envc, ZV_MAX_ENV, sizeof(char *), err, "env") < 0)
		return -err->code;
	return 0;
}

void zv_spec_free(struct zv_spec *s)
{
	free(s->id);
	for (size_t i = 0; i < s->argc; i++)
		free(s->argv[i]);
	free(s->argv);
	for (size_t i = 0; i < s->envc; i++)
		free(s->envp[i]);
	free(s->envp);
	for (size_t i = 0; i < s->nfiles; i++)
		free(s->files[i].name);
	free(s->files);
	free(s->root_base);
	for (size_t i = 0; i < s->nbinds; i++) {
		free(s->binds[i].source);
		free(s->binds[i].target);
	}
	free(s->binds);
	for (size_t i = 0; i < s->ncgroups; i++) {
		free(s->cgroups[i].controller);
		free(s->cgroups[i].parent);
	}
	free(s->cgroups);
	for (size_t i = 0; i < s->nll_paths; i++)
		free(s->ll_paths[i].path);
	free(s->ll_paths);
	free(s->ll_ports);
	free(s->apparmor_profile);
	for (size_t i = 0; i < s->nsc_allow; i++)
		free(s->sc_allow[i]);
	free(s->sc_allow);
	for (size_t i = 0; i < s->nbroker_files; i++) {
		free(s->broker_files[i].path);
		free(s->broker_files[i].source);
	}
	free(s->broker_files);
	free(s->netns_path);
	free(s->resolv_conf);
	free(s->image_root);
	free(s->workdir);
	free(s->workspace_src);
	free(s->workspace_target);
	memset(s, 0, sizeof(*s));
}

int zv_go_parse(const uint8_t *buf, size_t len, struct zv_spec *s, const uint8_t **control, size_t *control_len,
		struct zviz_error *err)
{
	*control = NULL;
	*control_len = 0;
	bool seen[7] = { false };
	for (size_t off = 0; off < len;) {
		if (len - off < 8)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO: truncated record header at offset %zu", off);
		uint16_t tag = rd_u16(buf + off);
		uint32_t rlen = rd_u32(buf + off + 4);
		off += 8;
		if (rd_u16(buf + off - 6) != 0 || rlen > len - off)
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO: malformed record at offset %zu", off - 8);
		const uint8_t *p = buf + off;
		off += rlen;
		if (tag < 1 || tag > 6 || seen[tag])
			return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO: unknown or repeated record tag %u", tag);
		seen[tag] = true;
		switch ((enum zv_go_tag)tag) {
		case ZV_G_LIMITS: {
			struct zv_limits l;
			if (rlen != sizeof(l))
				return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO limits: %u bytes, expected %zu", rlen, sizeof(l));
			memcpy(&l, p, sizeof(l));
			if (l.timeout_ms == 0 || l.memory_bytes == 0 || l.pids == 0 || l.cpu_millis == 0)
				return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO limits: missing or zero");
			s->limits.timeout_ms = l.timeout_ms;
			s->limits.output_bytes = l.output_bytes;
			s->limits.memory_bytes = l.memory_bytes;
			s->limits.pids = l.pids;
			s->limits.cpu_millis = l.cpu_millis;
			break;
		}
		case ZV_G_STDIN:
			s->stdin_data = p;
			s->stdin_len = rlen;
			break;
		case ZV_G_CONTROL:
			*control = p;
			*control_len = rlen;
			break;
		case ZV_G_STREAM:
			if (rlen != 0)
				return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO stream: %u bytes, expected none", rlen);
			s->stream = true;
			break;
		case ZV_G_ANSWER:
			if (rlen != 0)
				return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO answer: %u bytes, expected none", rlen);
			s->answer_on_reply = true;
			break;
		case ZV_G_LOG:
			if (rlen != 8)
				return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO log: %u bytes, expected 8", rlen);
			s->log_bytes = rd_u64(p);
			if (s->log_bytes == 0)
				return zv_fail(err, ZVIZ_E_INVALID_SPEC, 0, "GO log: a volume limit of 0 bytes");
			s->stream = true;
			break;
		}
	}
	return 0;
}
