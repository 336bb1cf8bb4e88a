// Privileged: what servers sharing one host share — the server registry, the `zviz` cgroup
// folders and layer E's nftables table — outlives any one of them and goes with the last.
// Two real servers with an egress profile route through one router namespace this suite
// creates (no packet leaves it: the egress profile allows nothing).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { networkToolsMissing } from './support/net-topology.js';
import { makeProfilesDir, type ProfilesDir } from './support/profiles.js';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';
import { sh, trySh } from './support/shell.js';
import { token } from './support/wait.js';

const skipReason = privilegedReason() ?? networkToolsMissing();

describe.skipIf(skipReason !== null)(`host lifecycle shared by servers${skipReason ? ` [skipped: ${skipReason}]` : ''}`, () => {
  const router = `zvhost-r-${token().slice(0, 6)}`;
  let profiles: ProfilesDir | null = null;
  const running: RunningServer[] = [];

  const tablePresent = (): boolean => trySh('ip', ['netns', 'exec', router, 'nft', 'list', 'table', 'inet', 'zviz']).status === 0;

  async function start(): Promise<RunningServer> {
    const s = await startServer({
      env: {
        ZVIZ_NET_ROUTER_NETNS: router,
        ZVIZ_NET_POOL: '10.199.3.0/28',
        ZVIZ_PROFILES_DIR: profiles!.dir,
        ZVIZ_WARM_MAX: '0',
      },
    });
    running.push(s);
    return s;
  }

  async function stop(s: RunningServer): Promise<void> {
    running.splice(running.indexOf(s), 1);
    expect(await s.stop()).toBe(0);
  }

  beforeAll(() => {
    sh('ip', ['netns', 'add', router]);
    profiles = makeProfilesDir({ 'egress-none': (p) => (p.network = { mode: 'egress', allow: [] }) });
  });

  afterAll(async () => {
    for (const s of [...running]) await s.stop();
    profiles?.remove();
    trySh('ip', ['netns', 'del', router]);
  });

  test("a server that stops keeps the nftables table an idle sibling with egress profiles still needs; the last one removes it", async () => {
    const first = await start();
    const second = await start();
    const egress = { runtime: 'bash', code: 'echo up', profile: 'egress-none' };
    expect((await first.invoke(egress)).stdout).toBe('up\n');
    expect(tablePresent()).toBe(true);

    // `second` has no sandbox now (no lock file in the pool): only the registry says it is there.
    await stop(first);
    expect(tablePresent(), 'the table went with the first server').toBe(true);
    const r = await second.post('/invoke', egress);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.stdout).toBe('up\n');

    await stop(second);
    expect(tablePresent(), 'the last server left its table behind').toBe(false);
  });
});
