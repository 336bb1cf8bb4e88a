// Whether a host process is alive: what the start-up sweeps ask of the server pid that
// named a leftover (cgroup folder, network namespace, pool lock file).

/** True while `pid` exists (EPERM means it exists but is not ours to signal). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
