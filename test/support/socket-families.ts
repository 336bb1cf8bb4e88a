// The socket address family probe that layer B (mode none) and layer E (egress) run in a
// sandbox, and what its answers mean.
//
// Invalid-argument technique: every family 0..AF_MAX-1 is tried with socket() and
// socketpair() and a type carrying an unknown flag bit. The kernel refuses that type with
// EINVAL before it looks at the family (net/socket.c: __sys_socket_create,
// __sys_socketpair), so EINVAL means the filter let the call through, and EAFNOSUPPORT can
// only be the policy's answer. Then a few real sockets: the allowed families work, and
// AF_VSOCK and AF_NETLINK with valid arguments are refused too.
import { SOCKET_FAMILIES } from '../../profiles/index.js';
import { PY_SYSCALL } from './sandboxes.js';

/** Family numbers 0 to AF_MAX - 1 (45 on Linux 6.x). */
export const ALL_FAMILIES = Object.values(SOCKET_FAMILIES).sort((a, b) => a - b);
export const FAMILY_NAME = new Map<number, string>(Object.entries(SOCKET_FAMILIES).map(([n, v]) => [v, n]));

/** A SOCK_STREAM type with bit 20 set, which is no SOCK_* flag. */
const BAD_TYPE = 0x100000 | 1;

/**
 * Python printing `{ sweep: { <family>: { socket, socketpair } }, real: { … } }`. The
 * host's control run passes `real: false`: it makes no socket at all (the sweep's bad type
 * fails every call before a socket exists).
 */
export function pySocketFamilies(nrSocket: number, nrSocketpair: number, { real = true } = {}): string {
  return `${PY_SYSCALL}
import socket
sweep = {}
for f in ${JSON.stringify(ALL_FAMILIES)}:
    sweep[f] = {'socket': sc(${nrSocket}, f, ${BAD_TYPE}, 0), 'socketpair': sc(${nrSocketpair}, f, ${BAD_TYPE}, 0, 1)}
def closing(*socks):
    for s in socks:
        s.close()
real = {} if ${real ? 'False' : 'True'} else {
  'AF_UNIX stream': attempt(lambda: closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))),
  'AF_UNIX socketpair': attempt(lambda: closing(*socket.socketpair(socket.AF_UNIX))),
  'AF_INET dgram': attempt(lambda: closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))),
  'AF_INET6 stream': attempt(lambda: closing(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))),
  'AF_VSOCK stream': attempt(lambda: closing(socket.socket(${SOCKET_FAMILIES.AF_VSOCK}, socket.SOCK_STREAM))),
  'AF_VSOCK socketpair': attempt(lambda: closing(*socket.socketpair(${SOCKET_FAMILIES.AF_VSOCK}, socket.SOCK_STREAM))),
  'AF_NETLINK route': attempt(lambda: closing(socket.socket(${SOCKET_FAMILIES.AF_NETLINK}, socket.SOCK_RAW, 0))),
}
print(json.dumps({'sweep': sweep, 'real': real}))
`;
}

export interface SocketFamiliesOut {
  sweep: Record<string, { socket: string; socketpair: string }>;
  real: Record<string, string>;
}

/** What the sweep must show when exactly `allowed` (by number) pass. */
export function expectedSweep(allowed: readonly number[]): SocketFamiliesOut['sweep'] {
  return Object.fromEntries(
    ALL_FAMILIES.map((f) => {
      const v = allowed.includes(f) ? 'EINVAL' : 'EAFNOSUPPORT';
      return [String(f), { socket: v, socketpair: v }];
    }),
  );
}

/** The real sockets of the probe under a profile allowing AF_UNIX, AF_INET and AF_INET6. */
export const EXPECTED_REAL = {
  'AF_UNIX stream': 'ok',
  'AF_UNIX socketpair': 'ok',
  'AF_INET dgram': 'ok',
  'AF_INET6 stream': 'ok',
  'AF_VSOCK stream': 'EAFNOSUPPORT',
  'AF_VSOCK socketpair': 'EAFNOSUPPORT',
  'AF_NETLINK route': 'EAFNOSUPPORT',
};

/** Refused calls the probe makes under such a profile: the broker's audit counts. */
export const EXPECTED_REFUSALS = { socket: ALL_FAMILIES.length - 3 + 2, socketpair: ALL_FAMILIES.length - 3 + 1 };
