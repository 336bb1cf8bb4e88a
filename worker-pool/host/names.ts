// Everything ZViz creates on the host, by name (docs/ARCHITECTURE.md, "Names on the host").
// Objects are named `zviz…` or `zv…`; cgroup folders and network namespaces also carry the
// pid of the server that made them, and lock files hold it, so a restarted server (or
// `zviz sweep`) tells a dead predecessor's leftovers from a live sibling's by name alone.

/** Host-wide state of every ZViz process on this host; outside any state directory. */
export const RUN_DIR = '/run/zviz';
/**
 * Empty directory each sandbox mounts its new root on, inside its own mount namespace. It
 * lives under /run, not the state directory: the sandbox's setup runs as an unprivileged
 * host uid that must be able to traverse every directory on the way.
 */
export const ROOT_BASE = `${RUN_DIR}/root`;
/** The server registry: one empty file per live server (or `zviz run`), named by its pid. */
export const SERVERS_DIR = `${RUN_DIR}/servers`;
/** Lock files of the egress address pool: `<N>` holds the pid that claimed pair N. */
export const NET_LOCK_DIR = `${RUN_DIR}/net`;
/**
 * Mount points of jobs' workspaces, `<JOBS_DIR>/<sandbox id>`: each a loop-mounted
 * filesystem image kept in the state directory (worker-pool/jobs/).
 */
export const JOBS_DIR = `${RUN_DIR}/jobs`;
/** Where `ip netns` keeps named network namespaces. */
export const NETNS_DIR = '/run/netns';

/** The folder beneath the server's own cgroup that holds its sandboxes' cgroups. */
export const CGROUP_PARENT = 'zviz';
/** v2 leaf the server moves itself into when its cgroup may not hold processes. */
export const SERVER_LEAF = 'zviz-server';

/** `<server pid>-<invocation id>[suffix]`: names one sandbox's cgroup folder and namespace. */
export function sandboxId(id: string, suffix = '', pid = process.pid): string {
  return `${pid}-${id}${suffix}`;
}

/** The cgroup folder of a sandbox, in each hierarchy's `zviz` parent. */
export function sandboxCgroup(sandbox: string): string {
  return `zviz-${sandbox}`;
}

/** What every cgroup folder of server `pid`'s sandboxes starts with. */
export function sandboxCgroupPrefix(pid = process.pid): string {
  return sandboxCgroup(`${pid}-`);
}

const SANDBOX_CGROUP = /^zviz-(\d+)-[A-Za-z0-9-]+$/;

/** The pid of the server that made sandbox cgroup folder `name`, or null when it is not one. */
export function sandboxCgroupOwner(name: string): number | null {
  const m = SANDBOX_CGROUP.exec(name);
  return m ? Number(m[1]) : null;
}

/**
 * Whether a cgroup folder's name is one ZViz creates: the `zviz` parent, the v2
 * `zviz-server` leaf, or a sandbox's `zviz-<pid>-<id>`. Anything else that merely starts
 * with `zviz` (a `zviz.service` unit's own cgroup, `zviz-api.service`) is someone else's:
 * the sweep walks into it, leftover checks leave it alone.
 */
export function isZvizCgroupName(name: string): boolean {
  return name === CGROUP_PARENT || name === SERVER_LEAF || sandboxCgroupOwner(name) !== null;
}

/** Named network namespace of an egress sandbox (in NETNS_DIR). */
export function netnsName(sandbox: string): string {
  return `zviz-${sandbox}`;
}

/** The pid of the server that made namespace `name`, or null when it is not one of ZViz's. */
export function netnsOwner(name: string): number | null {
  const m = /^zviz-(\d+)-/.exec(name);
  return m ? Number(m[1]) : null;
}

/** Router-side veth of pool pair `index`. */
export function vethName(index: number): string {
  return `zvs${index}`;
}

/** The pool pair of a router-side veth, or null when it is not one of ZViz's. */
export function vethIndex(name: string): number | null {
  const m = /^zvs(\d+)$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** nftables' wildcard for every router-side veth. */
export const VETH_WILDCARD = 'zvs*';

/** The nftables table of layer E, in the router namespace; shared by every server on the host. */
export const NFT_FAMILY = 'inet';
export const NFT_TABLE_NAME = 'zviz';
export const NFT_TABLE = `${NFT_FAMILY} ${NFT_TABLE_NAME}`;

/** Per sandbox pair `index`: its allowlist chain, its drop chain and the sets recording drops. */
export function nftNames(index: number): { chain: string; dropChain: string; dropSets: { v4port: string; v4: string; v6: string } } {
  return {
    chain: `sb-${index}`,
    dropChain: `sbd-${index}`,
    dropSets: { v4port: `d4-${index}`, v4: `da-${index}`, v6: `d6-${index}` },
  };
}

/** The pool pair of a sandbox chain (`sb-N` or `sbd-N`), or null. */
export function nftChainIndex(chain: string): number | null {
  const m = /^sbd?-(\d+)$/.exec(chain);
  return m ? Number(m[1]) : null;
}
