/* broker.c — layer B: the supervisor's answers to the sandbox's filtered syscalls.
 *
 * The supervisor is the trusted side already, outside every namespace of the sandbox, so
 * it answers the seccomp notifications itself, in its own poll loops (loop.c, supervisor.c,
 * reuse.c): there is no broker process. The function process hands its listener over a
 * socket the supervisor made before clone; every loop the supervisor waits in while the
 * sandbox can make a filtered call polls that socket, then the listener, and serves at
 * most ZV_BROKER_BATCH notifications per wake-up, so a flood from many threads queues
 * behind itself and never starves the pipes, the timers or the caller. Memory and fds are
 * fixed: one listener, one sealed copy per brokered file, a table of ZVIZ_MAX_AUDIT records.
 *
 * Fail closed: the supervisor is the only holder of the listener. If it dies, the kernel
 * answers every pending and every later notified call of the sandbox with ENOSYS (and
 * the sandbox dies with it, PDEATHSIG). If serving fails while it lives, it closes the
 * listener (the same ENOSYS from then on) and the loop ends the invocation (BROKER_DIED).
 *
 * Decisions:
 *   - open/openat/openat2/creat (routed here only when the profile brokers files): the
 *     path is read from the target's memory ONCE; then SECCOMP_IOCTL_NOTIF_ID_VALID
 *     proves the target is still blocked in this very call. If the path equals a
 *     brokered path exactly, the supervisor opens the host file itself (openat2 with
 *     RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS from its directory), copies
 *     it into a sealed memfd (once per sandbox) and injects a read-only fd of that copy
 *     (ADDFD + SEND, atomically): the sandbox never holds an fd that names a host path. A racing thread that rewrites the path
 *     buffer afterwards changes nothing: the kernel never re-reads it for this answer.
 *     Any other path "continues": the kernel runs the call in the sandbox, where the
 *     mount view, DAC and Landlock apply as if the broker were not there — CONTINUE
 *     grants nothing, which is the only use of it that is safe.
 *   - clone3: ENOSYS, so glibc falls back to clone (which the filter checks).
 *   - socket/socketpair (an address family the profile does not name): EAFNOSUPPORT.
 *   - anything else: EPERM.
 * Every denial and every brokered decision is recorded (deduplicated, capped) in the
 * supervisor's table before the call it decides returns to the sandbox, so whatever the
 * function did after it (its answer, its exit) comes after the record: the supervisor,
 * which copies the table once it has seen that, has the record. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

#ifndef SECCOMP_IOCTL_NOTIF_ADDFD
#error "kernel headers too old: SECCOMP_IOCTL_NOTIF_ADDFD missing"
#endif

static void record(struct zv_broker *b, uint32_t kind, uint32_t action, int nr, const char *path)
{
	for (uint32_t i = 0; i < b->n; i++) {
		struct zviz_audit *a = &b->records[i];
		/* A brokered file is one decision whichever open call asked for it. */
		bool same_call = kind == ZVIZ_AUDIT_BROKER || a->nr == nr;
		if (a->kind == kind && a->action == action && same_call &&
		    (!path || strncmp(a->path, path, sizeof(a->path)) == 0)) {
			a->count++;
			return;
		}
	}
	if (b->n == ZVIZ_MAX_AUDIT) {
		b->dropped++;
		return;
	}
	struct zviz_audit *a = &b->records[b->n++];
	memset(a, 0, sizeof(*a));
	a->kind = kind;
	a->action = action;
	a->nr = nr;
	a->count = 1;
	char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	snprintf(a->name, sizeof(a->name), "%s", name ? name : "unknown");
	free(name);
	if (path)
		snprintf(a->path, sizeof(a->path), "%s", path);
}

/* The listener the function process sent; -1 if it never will (it failed before it loaded
 * its filter and closed its end: it says why in its own result); -2 if nothing is there yet
 * (poll said readable, recvmsg disagrees: ask again at the next wake-up rather than drop a
 * listener still in flight). Called once the socket is readable. */
static int receive_listener(int sock)
{
	char dummy;
	struct iovec iov = { .iov_base = &dummy, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	ssize_t n;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return -2;
	if (n != 1)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* Reads a NUL-terminated path of the target, page by page (a path may end right before
 * an unmapped page). 0 on success. */
static int read_path(pid_t pid, uint64_t addr, char *out, size_t cap)
{
	char mem[64];
	snprintf(mem, sizeof(mem), "/proc/%d/mem", (int)pid);
	int fd = open(mem, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	const uint64_t page = 4096;
	size_t got = 0;
	int rc = -1;
	while (got < cap) {
		uint64_t at = addr + got;
		size_t want = (size_t)(page - (at % page));
		if (want > cap - got)
			want = cap - got;
		ssize_t n = pread(fd, out + got, want, (off_t)at);
		if (n <= 0)
			break;
		if (memchr(out + got, '\0', (size_t)n) != NULL) {
			rc = 0;
			break;
		}
		got += (size_t)n;
	}
	close(fd);
	return rc;
}

static int read_mem(pid_t pid, uint64_t addr, void *out, size_t len)
{
	char mem[64];
	snprintf(mem, sizeof(mem), "/proc/%d/mem", (int)pid);
	int fd = open(mem, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = pread(fd, out, len, (off_t)addr);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

/* Whether the profile's allowlist has this open call (the filter routed every open here
 * only because files are brokered). */
static bool allowed_call(const struct zv_broker *b, int nr)
{
	const char *name = nr == __NR_openat ? "openat" : nr == __NR_openat2 ? "openat2" : nr == __NR_open ? "open" : "creat";
	for (size_t i = 0; i < b->spec->nsc_allow; i++)
		if (strcmp(b->spec->sc_allow[i], name) == 0)
			return true;
	return false;
}

static const struct zv_broker_file *match(const struct zv_broker *b, const char *path)
{
	for (size_t i = 0; i < b->spec->nbroker_files; i++)
		if (strcmp(b->spec->broker_files[i].path, path) == 0)
			return &b->spec->broker_files[i];
	return NULL;
}

static int open_brokered(const struct zv_broker_file *f)
{
	/* Open the parent directory, then the last component beneath it: no symlink, no
	 * magic link, no `..` on the way, whatever was put at the host path. */
	const char *slash = strrchr(f->source, '/');
	char dir[4096];
	size_t dlen = (size_t)(slash - f->source);
	if (dlen == 0)
		dlen = 1;
	if (dlen >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, f->source, dlen);
	dir[dlen] = '\0';
	/* The directory too is resolved without symlinks: a writable directory on the way
	 * must not be able to point the broker (root) at another file. */
	struct open_how dhow = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	int dfd = (int)syscall(SYS_openat2, AT_FDCWD, dir, &dhow, sizeof(dhow));
	if (dfd < 0)
		return -errno;
	struct open_how how = {
		/* O_NONBLOCK: a FIFO put at the source must not hang the broker; the copy below
		 * refuses anything but a regular file anyway. */
		.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	int fd = (int)syscall(SYS_openat2, dfd, slash + 1, &how, sizeof(how));
	int e = errno;
	close(dfd);
	return fd < 0 ? -e : fd;
}

/* A sealed in-memory copy of a brokered file. The sandbox gets an fd of this copy, never
 * of the host file: readlink of /proc/self/fd/N shows "/memfd:<name> (deleted)", named
 * after the sandbox path, and nothing of the host (the host path of a secret names the
 * state directory and the tenant). Sealed against writing, growing, shrinking and
 * unsealing, so the fd cannot be turned into a channel or changed by anyone. At most
 * ZV_MAX_BROKERED_BYTES, read with a fixed buffer: a file that is not regular, or larger
 * (also one growing while it is read), is refused. */
static int sealed_copy(const struct zv_broker_file *f)
{
	int src = open_brokered(f);
	if (src < 0)
		return src;
	int rc = 0, mfd = -1;
	struct stat st;
	if (fstat(src, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		goto out;
	}
	if (st.st_size > (off_t)ZV_MAX_BROKERED_BYTES) {
		rc = -EFBIG;
		goto out;
	}
	char name[64];
	const char *base = strrchr(f->path, '/');
	snprintf(name, sizeof(name), "%s", base && base[1] ? base + 1 : "brokered");
	/* Not executable where the kernel knows the flag (6.3+); older kernels refuse it. */
	mfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
	if (mfd < 0 && errno == EINVAL)
		mfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0) {
		rc = -errno;
		goto out;
	}
	char buf[16384];
	off_t off = 0;
	for (;;) {
		ssize_t n = read(src, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		if (off + n > (off_t)ZV_MAX_BROKERED_BYTES) {
			rc = -EFBIG;
			goto out;
		}
		/* pwrite: the copy's offset stays 0 (the fds handed out are fresh opens anyway). */
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(mfd, buf + done, (size_t)(n - done), off + done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				rc = w < 0 ? -errno : -EIO;
				goto out;
			}
			done += w;
		}
		off += n;
	}
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		rc = -errno;
out:
	close(src);
	if (rc < 0) {
		if (mfd >= 0)
			close(mfd);
		return rc;
	}
	return mfd;
}

/* A read-only fd of brokered file f for one open: a fresh open of its sealed copy (made at
 * the first open), so every open has its own offset, as an open of the file would, and the
 * copy's memory is spent once per sandbox however often the function opens it. */
static int brokered_fd(struct zv_broker *b, const struct zv_broker_file *f)
{
	size_t i = (size_t)(f - b->spec->broker_files);
	if (b->copies[i] < 0) {
		int c = sealed_copy(f);
		if (c < 0)
			return c;
		b->copies[i] = c;
	}
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", b->copies[i]);
	int fd = open(self, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static bool id_valid(int listener, uint64_t id)
{
	return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

static void handle(struct zv_broker *b, const struct seccomp_notif *req, struct seccomp_notif_resp *resp)
{
	int nr = req->data.nr;
	resp->id = req->id;
	resp->val = 0;
	resp->flags = 0;
	resp->error = -EPERM;

	if (nr == __NR_clone3) {
		resp->error = -ENOSYS;
		record(b, ZVIZ_AUDIT_SECCOMP, ZVIZ_AUDIT_ERRNO, nr, NULL);
		return;
	}
	if (nr == __NR_socket || nr == __NR_socketpair) {
		/* An address family the profile does not name: what a kernel without it says, so
		 * runtimes fall back as they would there. */
		resp->error = -EAFNOSUPPORT;
		record(b, ZVIZ_AUDIT_SECCOMP, ZVIZ_AUDIT_ERRNO, nr, NULL);
		return;
	}
	bool is_open = nr == __NR_openat || nr == __NR_openat2 || nr == __NR_open || nr == __NR_creat;
	if (!is_open || b->spec->nbroker_files == 0) {
		record(b, ZVIZ_AUDIT_SECCOMP, ZVIZ_AUDIT_ERRNO, nr, NULL);
		return;
	}

	uint64_t addr = (nr == __NR_open || nr == __NR_creat) ? req->data.args[0] : req->data.args[1];
	char path[4096];
	if (read_path((pid_t)req->pid, addr, path, sizeof(path)) < 0) {
		resp->error = -EFAULT;
		return;
	}
	/* The read happened while the target was blocked in *this* call; if it no longer is
	 * (killed, pid reused), what we read means nothing. */
	if (!id_valid(b->listener, req->id)) {
		resp->error = -ENOENT;
		return;
	}
	const struct zv_broker_file *f = match(b, path);
	if (!f) {
		/* Not ours: if the profile allows this call, the kernel decides, inside the
		 * sandbox, with every other layer on; if it does not, it is denied as usual. */
		if (!allowed_call(b, nr)) {
			record(b, ZVIZ_AUDIT_SECCOMP, ZVIZ_AUDIT_ERRNO, nr, NULL);
			return;
		}
		resp->error = 0;
		resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		return;
	}
	uint64_t flags = nr == __NR_openat ? req->data.args[2] : req->data.args[1];
	if (nr == __NR_openat2) {
		/* openat2's flags are the first field of its struct open_how, in the target's
		 * memory; read it like the path, and recheck that the call is still pending. */
		if (read_mem((pid_t)req->pid, req->data.args[2], &flags, sizeof(flags)) < 0 ||
		    !id_valid(b->listener, req->id)) {
			resp->error = -EFAULT;
			return;
		}
	}
	if (nr == __NR_creat || (flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC))) {
		resp->error = -EACCES;
		record(b, ZVIZ_AUDIT_BROKER, ZVIZ_AUDIT_DENIED, nr, path);
		return;
	}
	int fd = brokered_fd(b, f);
	if (fd < 0) {
		resp->error = fd;
		record(b, ZVIZ_AUDIT_BROKER, ZVIZ_AUDIT_DENIED, nr, path);
		return;
	}
	struct seccomp_notif_addfd add = {
		.id = req->id,
		.flags = SECCOMP_ADDFD_FLAG_SEND,
		.srcfd = (uint32_t)fd,
		.newfd = 0,
		.newfd_flags = (flags & O_CLOEXEC) ? O_CLOEXEC : 0,
	};
	/* ADDFD + SEND installs the fd and completes the call in one step: there is no
	 * moment where the fd exists in the target but the call has not returned. */
	int r = ioctl(b->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add);
	int e = errno;
	close(fd);
	record(b, ZVIZ_AUDIT_BROKER, r >= 0 ? ZVIZ_AUDIT_ALLOWED : ZVIZ_AUDIT_DENIED, nr, path);
	if (r >= 0) {
		resp->id = 0; /* answered by ADDFD + SEND */
		return;
	}
	/* Not installed (e.g. EMFILE: the target's fd table is full): answer the call with
	 * that error, or it would wait for an answer until its timeout. */
	resp->error = -e;
}

int zv_broker_prepare(struct zv_broker *h, const struct zv_spec *spec, const struct zv_seccomp *sc,
		      struct zviz_error *err)
{
	memset(h, 0, sizeof(*h));
	h->spec = spec;
	h->sock = h->sock_child = h->listener = -1;
	for (size_t i = 0; i < ZV_MAX_BROKER_FILES; i++)
		h->copies[i] = -1;
	if (!sc->prog)
		return 0;
	struct seccomp_notif_sizes sizes;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0)
		return zv_fail(err, ZVIZ_E_SECCOMP, errno, "ask the kernel for the seccomp notification sizes");
	/* The kernel may know a larger struct than our headers: size the buffers by it. */
	h->req_size = sizes.seccomp_notif > sizeof(struct seccomp_notif) ? sizes.seccomp_notif : sizeof(struct seccomp_notif);
	h->resp_size = sizes.seccomp_notif_resp > sizeof(struct seccomp_notif_resp) ? sizes.seccomp_notif_resp
										     : sizeof(struct seccomp_notif_resp);
	h->req = calloc(1, h->req_size);
	h->resp = calloc(1, h->resp_size);
	if (!h->req || !h->resp)
		return zv_fail(err, ZVIZ_E_SYSTEM, ENOMEM, "allocate seccomp notification buffers");
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return zv_fail(err, ZVIZ_E_SECCOMP, errno, "socketpair for the seccomp listener");
	h->sock = sv[0];
	h->sock_child = sv[1];
	return 0;
}

int zv_broker_pollfd(const struct zv_broker *h)
{
	return h->listener >= 0 ? h->listener : h->sock;
}

static void close_listener(struct zv_broker *h)
{
	if (h->listener >= 0)
		close(h->listener);
	h->listener = -1;
}

/* One notification: receive, decide, answer. 0, or -1 if the listener is unusable. */
static int serve_one(struct zv_broker *h)
{
	struct seccomp_notif *req = h->req;
	struct seccomp_notif_resp *resp = h->resp;
	memset(req, 0, h->req_size);
	if (ioctl(h->listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0)
		/* ENOENT: the caller was interrupted (a signal, its death) before we took it. */
		return errno == EINTR || errno == ENOENT ? 0 : -1;
	memset(resp, 0, h->resp_size);
	handle(h, req, resp);
	/* ENOENT: the caller is gone, or no longer waits for this answer. */
	if (resp->id != 0 && ioctl(h->listener, SECCOMP_IOCTL_NOTIF_SEND, resp) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

void zv_broker_serve(struct zv_broker *h, short revents)
{
	if (h->listener < 0) {
		if (h->sock < 0 || !revents)
			return;
		/* The function process loaded its filter and sent the listener (or ended without). */
		int l = receive_listener(h->sock);
		if (l == -2)
			return;
		h->listener = l;
		close(h->sock);
		h->sock = -1;
		return; /* its notifications, if any, wake the next poll */
	}
	if (revents & POLLIN) {
		/* Bounded per wake-up: the caller's other fds get their turn between batches. Each
		 * RECV after the first is preceded by a poll that says one is pending: RECV itself
		 * would block until the next call. */
		for (int i = 0; i < ZV_BROKER_BATCH; i++) {
			struct pollfd p = { .fd = h->listener, .events = POLLIN, .revents = 0 };
			if (i > 0 && (poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN)))
				break;
			if (serve_one(h) < 0) {
				/* Fail closed: without a listener every filtered call gets ENOSYS. */
				h->failed = true;
				close_listener(h);
				return;
			}
		}
		return;
	}
	if (revents & POLLHUP) {
		close_listener(h); /* every filtered task is gone */
		return;
	}
	if (revents & (POLLERR | POLLNVAL)) {
		h->failed = true;
		close_listener(h);
	}
}

void zv_broker_audit(const struct zv_broker *h, struct zviz_audit *out, uint32_t *n, uint64_t *dropped)
{
	*n = h->n;
	memcpy(out, h->records, h->n * sizeof(h->records[0]));
	*dropped += h->dropped;
}

void zv_broker_audit_mark(struct zv_broker *h)
{
	h->n = 0;
	h->dropped = 0;
}

void zv_broker_finish(struct zv_broker *h)
{
	close_listener(h);
	int *fds[] = { &h->sock, &h->sock_child };
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
	for (size_t i = 0; i < ZV_MAX_BROKER_FILES; i++) {
		if (h->copies[i] >= 0)
			close(h->copies[i]);
		h->copies[i] = -1;
	}
	free(h->req);
	free(h->resp);
	h->req = NULL;
	h->resp = NULL;
}
