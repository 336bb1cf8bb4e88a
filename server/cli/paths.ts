// The /run/zviz paths a server (server/main.ts) and the command line share on one host.
export const RUN_DIR = '/run/zviz';
/** Empty directory each sandbox mounts its new root on, inside its own mount namespace. */
export const ROOT_BASE = '/run/zviz/root';
/** Lock files of the egress address pool (worker-pool/network.ts claimIndex). */
export const NET_LOCK_DIR = '/run/zviz/net';
