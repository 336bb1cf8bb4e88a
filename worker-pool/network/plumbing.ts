// Layer E's plumbing: the `ip` and `nft` commands, run in the host's network namespace or
// in the router namespace (ZVIZ_NET_ROUTER_NETNS), and the namespace and veth pair of one
// egress sandbox. Every command has a 10 s timeout; a failure throws with its stderr.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { NETNS_DIR, vethName } from '../host/names.js';

/** Where sandboxes are routed: the router namespace, or null for the host's own. */
export interface Router {
  routerNetns: string | null;
}

export function run(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 10_000 });
  if (r.error) throw new Error(`Cannot run ${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** `nft ARGS` in the router's namespace. */
export function nft(router: Router, args: string[], input?: string): string {
  return router.routerNetns ? run('ip', ['netns', 'exec', router.routerNetns, 'nft', ...args], input) : run('nft', args, input);
}

/** `ip` options that address the router's namespace. */
export function routerIp(router: Router): string[] {
  return router.routerNetns ? ['-n', router.routerNetns] : [];
}

/**
 * A namespace `ns` owned by the host's user namespace (the sandbox has no CAP_NET_ADMIN in
 * it, so it cannot change its own addresses, routes or rules), with `eth0` at `inner` and
 * its peer `zvs<index>` at `outer` in the router, the default route through it.
 */
export function createPair(router: Router, ns: string, index: number, outer: string, inner: string): void {
  const veth = vethName(index);
  run('ip', ['netns', 'add', ns]);
  run('ip', [...routerIp(router), '-batch', '-'], [
    `link add ${veth} type veth peer name eth0 netns ${ns}`,
    `addr add ${outer}/31 dev ${veth}`,
    `link set ${veth} up`,
  ].join('\n') + '\n');
  // IPv6 off before eth0 comes up: the egress policy is IPv4, and no v6 packet (not even
  // link-local neighbour discovery) should leave the sandbox.
  run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  run('ip', ['-n', ns, '-batch', '-'], [
    'link set lo up',
    `addr add ${inner}/31 dev eth0`,
    'link set eth0 up',
    `route add default via ${outer}`,
  ].join('\n') + '\n');
}

/** Deletes the router-side veth of pair `index`; false when it was not there. */
export function deleteVeth(router: Router, index: number): boolean {
  try {
    run('ip', [...routerIp(router), 'link', 'del', vethName(index)]);
    return true;
  } catch {
    return false; // never made, or gone with its namespace
  }
}

/** Deletes a named namespace; false when it could not be (a later sweep retries). */
export function deleteNetns(ns: string): boolean {
  try {
    run('ip', ['netns', 'del', ns]);
    return true;
  } catch {
    return false; // busy or gone: the next sweep retries
  }
}

/** The named network namespaces of this host. */
export function namedNetns(): string[] {
  return existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR) : [];
}

/** The router's interface names; empty when `ip` cannot list them. */
export function routerLinks(router: Router): string[] {
  try {
    const list = JSON.parse(run('ip', [...routerIp(router), '-j', 'link', 'show'])) as Array<{ ifname?: string }>;
    return list.flatMap((l) => (l.ifname ? [l.ifname] : []));
  } catch {
    return []; // no router namespace (yet), or no ip: nothing of ours can be there
  }
}
