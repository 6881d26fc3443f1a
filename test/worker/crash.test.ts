import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { workerTmpDir } from '../../src/config/paths.js';
import { predictTask } from '../support/worker-fixtures.js';
import {
  deliveriesOf,
  type Harness,
  reportsOf,
  TOPIC,
  until,
  useHarness,
} from '../support/worker-harness.js';
import { hasPodman, requireEngines, WARN, type WorkerProcess } from '../support/worker-process.js';

// A worker killed with SIGKILL in the middle of a task: NSQ gives the message to
// another worker after its timeout, and the killed worker, started again on the same
// state folder, removes what it left and says which task and step were interrupted.

describe.skipIf(!hasPodman && !requireEngines)('crash of a worker', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 3000 }, (started) => {
    h = started;
  });

  it('the task is redelivered to another worker and done; the restart cleans up', async () => {
    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 30 });
    // Two workers wait; whichever takes the task is killed in the middle of it.
    const pair = [
      await h.fleet.start(await h.args(), { env: h.env }),
      await h.fleet.start(await h.args(), { env: h.env }),
    ];
    for (const w of pair) {
      await w.waitForLine((l) => l.msg === 'connected to nsqd', 60_000, 'a worker connected');
    }
    const [id] = h.nsqd.publish(TOPIC.predict, task.body) as [string];
    const started = (w: WorkerProcess) =>
      w.lines.some((l) => l.task === task.uuid && l.step === 'predict' && l.msg === 'step started');
    await until(() => pair.some(started), 120_000, 'the predict step to start');
    const crashing = pair.find(started) as WorkerProcess;
    const other = pair.find((w) => w !== crashing) as WorkerProcess;
    const crashedId = await crashing.workerId();
    crashing.kill('SIGKILL');
    await crashing.exited;
    expect(reportsOf(h.orchestrator, task.uuid)).toEqual([]);
    // The second run need not wait as long.
    h.storage.seed('data', task.data, { blob: '\n' });

    await other.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      180_000,
      'the other worker to finish the task',
    );
    const deliveries = deliveriesOf(h.nsqd.stats(), TOPIC.predict, id);
    expect(deliveries.map((d) => d.attempts)).toEqual([1, 2]);
    expect(deliveries[1]?.connectionId).not.toBe(deliveries[0]?.connectionId);
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => [r.body.status, r.status])).toEqual([
      ['done', 200],
    ]);

    // What the dead worker left: its task volumes at least (the container may have ended).
    const left = await h.fleet.leftovers(crashedId);
    expect(left.volumes.length).toBeGreaterThan(0);
    // As root with rootful podman, the predict step's sized filesystem is still mounted.
    const tmp = `${workerTmpDir(crashedId)}/`;
    const sized = process.getuid?.() === 0;
    if (sized) expect(await readFile('/proc/self/mountinfo', 'utf8')).toContain(tmp);

    const restarted = await h.fleet.start(await h.args([], crashing.stateDir), { env: h.env });
    const interrupted = await restarted.waitForLine(
      (l) => l.msg.includes('interrupted'),
      60_000,
      'the interrupted task named',
    );
    expect(interrupted).toMatchObject({ level: WARN, task: task.uuid, step: 'predict' });
    const removed = await restarted.waitForLine(
      (l) => l.msg.includes('removed containers and volumes left by a previous run'),
      60_000,
      'the leftovers removed',
    );
    expect(removed.volumes).toEqual(expect.arrayContaining(left.volumes));
    if (sized) {
      const released = restarted.lines.find((l) =>
        l.msg.includes('released the sized filesystems left by a previous run'),
      );
      expect(released?.mounts).toEqual(expect.arrayContaining([expect.stringContaining(tmp)]));
      expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(tmp);
      expect((await execa('losetup', ['-a'])).stdout).not.toContain(tmp);
    }
    await restarted.waitForLine((l) => l.msg === 'worker started', 60_000, 'the restart');
    expect(await h.fleet.leftovers(crashedId)).toEqual({ containers: [], volumes: [] });
    // The dead run's task temp folder goes too.
    expect(await readdir(workerTmpDir(crashedId))).toEqual([]);
    expect(await restarted.workerId()).toBe(crashedId);
  }, 300_000);

  it('a task the worker was running each of three times it ended is reported, not run again', async () => {
    // The workers of the test before would take the task.
    for (const w of h.fleet.workers) w.kill('SIGTERM');
    await Promise.all(h.fleet.workers.map((w) => w.exited));
    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 30 });
    const first = await h.fleet.start(await h.args(), { env: h.env });
    await first.waitForLine((l) => l.msg === 'connected to nsqd', 60_000, 'the worker connected');
    // Two earlier runs of this worker ended while they ran the task (as a restart counts them).
    await writeFile(join(first.stateDir, 'interrupted', task.uuid), '2');
    h.nsqd.publish(TOPIC.predict, task.body);
    await first.waitForLine(
      (l) => l.task === task.uuid && l.step === 'predict' && l.msg === 'step started',
      120_000,
      'the predict step to start',
    );
    first.kill('SIGKILL');
    await first.exited;

    const restarted = await h.fleet.start(await h.args([], first.stateDir), { env: h.env });
    const interrupted = await restarted.waitForLine(
      (l) => l.msg.includes('interrupted'),
      60_000,
      'the interrupted task named',
    );
    expect(interrupted).toMatchObject({ task: task.uuid, interruptions: 3 });
    await until(() => reportsOf(h.orchestrator, task.uuid).length > 0, 120_000, 'a report');
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body)).toEqual([
      expect.objectContaining({
        status: 'failed',
        error: expect.objectContaining({
          fault: 'worker',
          message: expect.stringMatching(/this worker stopped 3 times while it ran this task/),
        }),
      }),
    ]);
    expect(restarted.lines.filter((l) => l.task === task.uuid && l.msg === 'task started')).toEqual(
      [],
    );
    expect(await readdir(join(first.stateDir, 'interrupted'))).toEqual([]);
  }, 300_000);
});
