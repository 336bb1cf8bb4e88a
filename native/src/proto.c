/* proto.c — framing for the library ↔ supervisor control socket. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

int zv_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		/* send() with MSG_NOSIGNAL: a dead peer must be an error, not a SIGPIPE. */
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == ENOTSOCK)
			n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int zv_read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			if (got == 0)
				return 1;
			errno = EPIPE;
			return -1;
		}
		got += (size_t)n;
	}
	return 0;
}

int zv_send_framev(int fd, uint32_t type, const struct iovec *parts, size_t n)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += parts[i].iov_len;
	if (total > ZV_MAX_FRAME) {
		errno = EMSGSIZE;
		return -1;
	}
	struct zv_frame f = { .magic = ZV_FRAME_MAGIC, .type = type, .len = (uint32_t)total, .reserved = 0 };
	if (zv_write_all(fd, &f, sizeof(f)) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (parts[i].iov_len && zv_write_all(fd, parts[i].iov_base, parts[i].iov_len) < 0)
			return -1;
	return 0;
}

int zv_send_frame(int fd, uint32_t type, const void *payload, size_t len)
{
	struct iovec part = { .iov_base = (void *)payload, .iov_len = len };
	return zv_send_framev(fd, type, &part, payload ? 1 : 0);
}

int zv_recv_header(int fd, struct zv_frame *f)
{
	int r = zv_read_all(fd, f, sizeof(*f));
	if (r != 0)
		return r;
	if (f->magic != ZV_FRAME_MAGIC || f->len > ZV_MAX_FRAME) {
		errno = EPROTO;
		return -2;
	}
	return 0;
}

int zv_write_text(const char *path, const char *text, int code, struct zviz_error *err)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return zv_fail(err, code, errno, "open `%s`", path);
	size_t len = strlen(text);
	ssize_t n = write(fd, text, len);
	int e = errno;
	close(fd);
	if (n != (ssize_t)len)
		return zv_fail(err, code, n < 0 ? e : EIO, "write `%s` to `%s`", text, path);
	return 0;
}
