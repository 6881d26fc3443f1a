import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { ENGINE_TMP_BASE } from '../../src/build/confine.js';
import { buildCgroupsWhere, processesWith } from '../support/build-traces.js';
import { learnTask, seedAlgo } from '../support/worker-fixtures.js';
import {
  deliveriesOf,
  type Harness,
  reportsOf,
  TOPIC,
  useHarness,
} from '../support/worker-harness.js';
import { hasPodman, requireEngines, WARN } from '../support/worker-process.js';

// A worker killed with SIGKILL while it builds a submission: its `podman build` lives on
// (in the worker's build cgroup, which no service manager stops with the worker), and
// would spin for ever. Started again on the same state folder, the worker stops that
// build and removes what it left before it takes any message.

describe.skipIf(!hasPodman && !requireEngines)('crash of a worker during a build', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 3000 }, (started) => {
    h = started;
  });

  it('the restart stops the build the dead worker left running and removes what it left', async () => {
    const marker = `cworphan${randomBytes(6).toString('hex')}`;
    const algo = await seedAlgo(h.storage, [`RUN while :; do :; done # ${marker}`]);
    const task = learnTask(h.storage, h.orchestrator, { ...h.fixtures, algoUuid: algo });
    // A fifth of a core for the spinning RUN, and a build timeout it cannot reach here.
    const limits = ['--build-cpus', '0.2', '--build-timeout', '10m'];
    const worker = await h.fleet.start(await h.args(limits), { env: h.env });
    const [id] = h.nsqd.publish(TOPIC.learn, task.body) as [string];
    await spinningWithin(marker, 180_000);
    const workerId = await worker.workerId();
    worker.kill('SIGKILL');
    await worker.exited;
    await sleep(1000);
    // Nothing else stops it.
    expect(await processesWith(marker)).not.toEqual([]);
    expect(await buildCgroupsWhere((id) => id.startsWith(`${workerId}.`))).not.toEqual([]);

    // The redelivery builds the submission as it is now: one that does not spin.
    await seedAlgo(h.storage, [], algo);
    const restarted = await h.fleet.start(await h.args(limits, worker.stateDir), {
      env: h.env,
    });
    const stopped = await restarted.waitForLine(
      (l) => l.msg === 'stopped and removed the image builds left by a previous run',
      120_000,
      'the orphan build stopped',
    );
    expect(stopped.level).toBe(WARN);
    expect(stopped.builds).toEqual([expect.stringMatching(new RegExp(`^${workerId}\\.`))]);
    // Its buildah working container, in the build user's storage (or the host's).
    expect(stopped.containers).toHaveLength(1);
    expect(await processesWith(marker)).toEqual([]);
    expect(await buildCgroupsWhere((id) => id.startsWith(`${workerId}.`))).toEqual([]);
    expect(
      (await readdir(ENGINE_TMP_BASE)).filter((n) => n.startsWith(`cw-build-tmp-${workerId}.`)),
    ).toEqual([]);

    await restarted.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      180_000,
      'the redelivered task done',
    );
    expect(deliveriesOf(h.nsqd.stats(), TOPIC.learn, id).map((d) => d.attempts)).toEqual([1, 2]);
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
  }, 480_000);
});

async function spinningWithin(marker: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await processesWith(marker)).length === 0) {
    if (Date.now() > deadline) throw new Error(`no RUN step spinning after ${timeoutMs} ms`);
    await sleep(200);
  }
}
