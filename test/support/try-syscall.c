/* try-syscall NR [ARG…]: makes one raw system call with integer arguments and prints
 * "ok <ret>" or "errno <n>". Built static by the image suite and put into a test image, so
 * the invalid-argument technique (bubblewrap's try-syscall) works in an image root that
 * has no interpreter: an unfiltered call with a bad pointer fails EFAULT, a filtered one
 * with the policy's errno. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long a[6] = { 0 };
	if (argc < 2)
		return 2;
	for (int i = 2; i < argc && i < 8; i++)
		a[i - 2] = strtol(argv[i], NULL, 0);
	long r = syscall(strtol(argv[1], NULL, 0), a[0], a[1], a[2], a[3], a[4], a[5]);
	if (r < 0)
		printf("errno %d\n", errno);
	else
		printf("ok %ld\n", r);
	return 0;
}
