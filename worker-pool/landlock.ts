// Layer C policy: which path of the sandbox's view gets which Landlock rights, and which
// TCP ports. Computed here, on the trusted side, from the profile; native/src/landlock.c
// only applies it. Anything not granted below is denied for every right the kernel
// handles.
import type { Profile } from '../profiles/schema.js';
import { LANDLOCK_MAX_KNOWN_ABI, LANDLOCK_RIGHTS_BY_ABI } from '../profiles/schema.js';

/** Landlock filesystem access bits (kernel ABI, include/uapi/linux/landlock.h). */
export const FS = {
  execute: 1n << 0n,
  write_file: 1n << 1n,
  read_file: 1n << 2n,
  read_dir: 1n << 3n,
  remove_dir: 1n << 4n,
  remove_file: 1n << 5n,
  make_char: 1n << 6n,
  make_dir: 1n << 7n,
  make_reg: 1n << 8n,
  make_sock: 1n << 9n,
  make_fifo: 1n << 10n,
  make_block: 1n << 11n,
  make_sym: 1n << 12n,
  refer: 1n << 13n,
  truncate: 1n << 14n,
  ioctl_dev: 1n << 15n,
} as const;

export const NET = { bind_tcp: 1n << 0n, connect_tcp: 1n << 1n } as const;

const READ = FS.read_file | FS.read_dir;
const READ_EXEC = READ | FS.execute;
/** Everything a scratch directory needs; never device nodes. */
const READ_WRITE =
  READ |
  FS.write_file |
  FS.remove_dir |
  FS.remove_file |
  FS.make_dir |
  FS.make_reg |
  FS.make_sock |
  FS.make_fifo |
  FS.make_sym |
  FS.refer |
  FS.truncate;

export interface PathRule {
  path: string;
  access: bigint;
  /** The path may be absent from the view (a host without it); skip instead of failing. */
  optional: boolean;
}

export interface LandlockPolicy {
  enabled: boolean;
  bestEffort: boolean;
  /** TCP connect is left to the network layer (an egress entry allows every port). */
  connectUnrestricted: boolean;
  minAbi: number;
  paths: PathRule[];
  ports: Array<{ port: number; access: bigint }>;
}

/** Files of the synthesized /etc a runtime reads; /etc itself is listable, nothing more. */
const ETC_FILES = [
  '/etc/passwd',
  '/etc/group',
  '/etc/hosts',
  '/etc/nsswitch.conf',
  '/etc/hostname',
  '/etc/resolv.conf',
  '/etc/ld.so.cache',
  '/etc/services',
  '/etc/protocols',
];

/**
 * `imageRoot`: the root is an OCI image's tree, all of it the image's own and nothing of
 * the host's: read and execute on all of it, writes only where the host-rooted view
 * allows them (/tmp, /dev/shm, the device nodes).
 */
export function landlockPolicy(profile: Pick<Profile, 'landlock' | 'filesystem' | 'network'>, imageRoot = false, workspace?: string): LandlockPolicy {
  const ll = profile.landlock;
  const rule = (path: string, access: bigint, optional = false): PathRule => ({ path, access, optional });
  // A job's workspace is its own filesystem: it builds there and runs what it built
  // (execute), never makes device nodes there (and the mount is nodev, nosuid anyway).
  const jobRules = workspace === undefined ? [] : [rule(workspace, READ_WRITE | FS.execute)];
  const paths: PathRule[] = imageRoot
    ? [
        rule('/', READ_EXEC),
        rule('/dev', READ | FS.write_file | FS.truncate),
        rule('/dev/shm', READ_WRITE),
        rule('/tmp', READ_WRITE),
        ...ll.readOnly.map((p) => rule(p, READ)),
        ...ll.readWrite.map((p) => rule(p, READ_WRITE)),
        ...jobRules,
      ]
    : [
    rule('/usr', READ_EXEC),
    rule('/fn', READ),
    // procfs: reading one's own process state is how runtimes learn about themselves.
    rule('/proc', READ),
    // Device nodes: null, zero, full, random, urandom. `> /dev/null` opens with O_TRUNC.
    rule('/dev', READ | FS.write_file | FS.truncate),
    rule('/dev/shm', READ_WRITE),
    rule('/tmp', profile.filesystem.tmpExec ? READ_WRITE | FS.execute : READ_WRITE),
    // Listing /etc is harmless; reading is granted file by file, so even a profile that
    // binds the host's /etc there cannot read what is not on this list.
    rule('/etc', FS.read_dir),
    ...ETC_FILES.map((f) => rule(f, FS.read_file, true)),
    rule('/etc/ssl/certs', READ, true),
    rule('/etc/alternatives', READ_EXEC, true),
    ...ll.readOnly.map((p) => rule(p, READ)),
    ...ll.readWrite.map((p) => rule(p, READ_WRITE)),
    ...jobRules,
  ];
  const ports = new Map<number, bigint>();
  for (const p of ll.tcpBind) ports.set(p, (ports.get(p) ?? 0n) | NET.bind_tcp);
  // TCP connect: the profile's own ports plus what the network allowlist lets out.
  const net = profile.network;
  const egressPorts = net.mode === 'egress' ? net.allow.filter((a) => a.protocol === 'tcp').flatMap((a) => a.ports) : [];
  const dnsPorts = net.mode === 'egress' && net.dns ? [53] : [];
  for (const p of [...ll.tcpConnect, ...egressPorts, ...dnsPorts]) ports.set(p, (ports.get(p) ?? 0n) | NET.connect_tcp);
  const connectUnrestricted = net.mode === 'egress' && net.allow.some((a) => a.protocol === 'tcp' && a.ports.length === 0);
  return {
    enabled: true,
    bestEffort: ll.bestEffort,
    connectUnrestricted,
    minAbi: ll.minAbi,
    paths,
    ports: [...ports].map(([port, access]) => ({ port, access })),
  };
}

/** Rights a kernel with `abi` cannot enforce (empty when it handles them all). */
export function unenforcedRights(abi: number): string[] {
  if (abi <= 0) return ['fs.all', ...Object.keys(LANDLOCK_RIGHTS_BY_ABI)];
  return Object.entries(LANDLOCK_RIGHTS_BY_ABI)
    .filter(([, needs]) => abi < needs)
    .map(([name]) => name);
}

/** Start-up check: null if the profile can run on a kernel with `abi`, else why not. */
export function landlockRefusal(profile: Profile, abi: number): string | null {
  const ll = profile.landlock;
  if (abi >= ll.minAbi || ll.bestEffort) return null;
  return `Profile '${profile.name}' requires Landlock ABI ${ll.minAbi} but this kernel offers ${abi}: upgrade the kernel (Landlock ABI ${ll.minAbi} needs Linux ${KERNEL_FOR_ABI[ll.minAbi] ?? 'newer'}), or set landlock.bestEffort to true in the profile`;
}

const KERNEL_FOR_ABI: Record<number, string> = { 1: '5.13', 2: '5.19', 3: '6.2', 4: '6.7', 5: '6.10', 6: '6.12', 7: '6.15' };
export { LANDLOCK_MAX_KNOWN_ABI };
