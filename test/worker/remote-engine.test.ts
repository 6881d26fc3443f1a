import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VARIANTS } from '../support/engine-variants.js';
import { type PodmanService, startPodmanService } from '../support/podman-service.js';
import { assertBuilt, requireEngines, WARN, WorkerFleet } from '../support/worker-process.js';

// The daemon against a remote engine says once, at start-up, what it cannot enforce there,
// and its start-up work (the leftover sweep) goes through the engine's socket.

const why = VARIANTS['podman-remote'].unavailable();

describe.skipIf(why !== undefined && !requireEngines)('the daemon on a remote engine', () => {
  let service: PodmanService;
  const fleet = new WorkerFleet();

  beforeAll(async () => {
    assertBuilt();
    service = await startPodmanService();
  }, 60_000);

  afterAll(async () => {
    await fleet.cleanup();
    await service?.stop();
  });

  it('warns once at start-up, naming the engine and every limit it does not enforce', async () => {
    const stateDir = await fleet.newStateDir();
    const logFrom = service.log().length;
    // No nsqd answers there: the daemon starts, sweeps and keeps trying to connect.
    const worker = await fleet.start([
      '--engine-host',
      service.url,
      '--state-dir',
      stateDir,
      '--log-format',
      'json',
      '--nsqd-tcp-addresses',
      '127.0.0.1:9',
    ]);
    const warning = await worker.waitForLine(
      (l) => l.level === WARN && l.msg.startsWith('remote podman at'),
      120_000,
      'the remote engine warning',
    );
    expect(warning.msg).toContain(`remote podman at ${service.url}: not enforced here`);
    for (const what of ['--disk-limit', '--min-free-disk', 'GPUs', '--build-pids-limit']) {
      expect(warning.msg).toContain(what);
    }
    // The sweep of what a previous run left asked the service for this worker's containers.
    await worker.waitForLine((l) => /nsq/i.test(l.msg), 120_000, 'an nsqd connection attempt');
    expect(service.log().slice(logFrom)).toMatch(/"GET \/v[\d.]+\/libpod\/containers\/json\?/);
    expect(worker.find('remote podman at')).toHaveLength(1);
  });
});
