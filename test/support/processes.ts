// Helper processes a suite starts itself (redis-server, redis-sentinel, haproxy): each keeps
// the tail of its output for failure messages, and is stopped by its own pid, never by name.
import { spawn, type ChildProcess } from 'node:child_process';
import { sleep } from './wait.js';

export interface Proc {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
  /** The last 20 kB of its stdout and stderr. */
  output: () => string;
}

export class ProcessGroup {
  /** The processes started and not yet stopped or forgotten, oldest first. */
  readonly running: Proc[] = [];

  /** Starts `cmd` with only PATH (and `env`) in its environment. */
  start(name: string, cmd: string, args: string[], env: Record<string, string> = {}): Proc {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
    let out = '';
    const keep = (d: Buffer): void => {
      out = (out + d.toString()).slice(-20_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const p = { name, child, exited, output: () => out };
    this.running.push(p);
    return p;
  }

  /** Sends `signal` by pid, then SIGKILL if it has not exited within 5 s; waits for the exit. */
  async stop(p: Proc, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (p.child.exitCode === null && p.child.signalCode === null && p.child.pid !== undefined) {
      process.kill(p.child.pid, signal);
      const late = await Promise.race([p.exited.then(() => false), sleep(5000).then(() => true)]);
      if (late && p.child.exitCode === null && p.child.signalCode === null) {
        process.kill(p.child.pid, 'SIGKILL');
        await p.exited;
      }
    }
    this.forget(p);
  }

  /** Stops every process still running, newest first. */
  async stopAll(): Promise<void> {
    for (const p of [...this.running].reverse()) await this.stop(p);
  }

  /** Drops a process that exited by itself from the list. */
  forget(p: Proc): void {
    const at = this.running.indexOf(p);
    if (at >= 0) this.running.splice(at, 1);
  }

  /** Every running process's output, for a failure message. */
  outputs(): string {
    return this.running.map((p) => `${p.name}: ${p.output()}`).join('\n');
  }
}
