import { describe, expect, it } from 'vitest';
import { predictTask, type SeededTask } from '../support/worker-fixtures.js';
import { type Harness, reportsOf, TOPIC, until, useHarness } from '../support/worker-harness.js';
import { hasPodman, requireEngines, type WorkerProcess } from '../support/worker-process.js';

// Several workers on one host. A worker's state folder is held by one live process: a
// second worker on the same folder refuses to start and touches nothing; workers with
// their own --state-dir share the tasks, and one that crashes and restarts removes only
// what it left itself, never its running sibling's containers and volumes.

const doneOnce = (h: Harness, t: SeededTask) =>
  reportsOf(h.orchestrator, t.uuid).map((r) => [r.body.status, r.status]);

const inPredict = (w: WorkerProcess, t: SeededTask) =>
  w.lines.some((l) => l.task === t.uuid && l.step === 'predict' && l.msg === 'step started');

describe.skipIf(!hasPodman && !requireEngines)('many workers on one host', () => {
  let h: Harness;
  // nsqd's message timeout is the time a killed worker's tasks wait before redelivery;
  // much shorter and a loaded host misses touches, so tasks run twice.
  useHarness(
    { msgTimeoutMs: 10_000 },
    (started) => {
      h = started;
    },
    { each: true },
  );

  it('a second worker on the same state folder refuses to start, naming --state-dir', async () => {
    const shared = await h.fleet.newStateDir();
    const first = await h.fleet.start(await h.args([], shared), { env: h.env });
    await first.waitForLine((l) => l.msg === 'worker started', 240_000, 'the first worker');
    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 4 });
    h.nsqd.publish(TOPIC.predict, task.body);
    await until(() => inPredict(first, task), 120_000, 'the predict step to start');
    const firstId = await first.workerId();
    const running = await h.fleet.leftovers(firstId);
    expect(running.volumes.length).toBeGreaterThan(0);

    const second = await h.fleet.start(await h.args([], shared), { env: h.env });
    expect(await second.exited).toMatchObject({ exitCode: 2 });
    expect(second.output).toContain(
      `the state folder ${shared} is in use by another compute-worker process (pid ${first.pid})`,
    );
    expect(second.output).toContain('--state-dir');
    // Its one plain-text error line was checked here; the harness wants JSON lines only.
    second.other.splice(0);
    // It did not touch the first worker's task: its volumes are still there, and it ends done.
    const after = await h.fleet.leftovers(firstId);
    expect(after.volumes).toEqual(expect.arrayContaining(running.volumes));
    await first.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      120_000,
      'the first worker to finish its task',
    );
    expect(doneOnce(h, task)).toEqual([['done', 200]]);
    expect(first.find('removed containers and volumes')).toEqual([]);
  }, 300_000);

  it('a worker killed and restarted beside a sibling removes only its own leftovers', async () => {
    const parallel = ['--predict-parallelism', '2'];
    const crashing = await h.fleet.start(await h.args(parallel), { env: h.env });
    const sibling = await h.fleet.start(await h.args(parallel), { env: h.env });
    for (const w of [crashing, sibling])
      await w.waitForLine((l) => l.msg === 'worker started', 240_000, 'a worker started');
    const tasks = Array.from({ length: 4 }, () =>
      predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 2 }),
    );
    h.nsqd.publish(
      TOPIC.predict,
      tasks.map((t) => t.body),
    );
    await until(
      () => tasks.some((t) => inPredict(crashing, t)) && tasks.some((t) => inPredict(sibling, t)),
      120_000,
      'both workers running a task',
    );
    const [crashedId, siblingId] = [await crashing.workerId(), await sibling.workerId()];
    expect(crashedId).not.toBe(siblingId);
    crashing.kill('SIGKILL');
    await crashing.exited;
    const leftByCrash = await h.fleet.leftovers(crashedId);
    const siblingBefore = await h.fleet.leftovers(siblingId);

    const restarted = await h.fleet.start(await h.args(parallel, crashing.stateDir), {
      env: h.env,
    });
    await restarted.waitForLine((l) => l.msg === 'worker started', 180_000, 'the restart');
    expect(await restarted.workerId()).toBe(crashedId);
    const removed = restarted.find('removed containers and volumes left by a previous run');
    const removedVolumes = removed.flatMap((l) => (l.volumes as string[]) ?? []);
    expect(removedVolumes).toEqual(expect.arrayContaining(leftByCrash.volumes));
    for (const v of siblingBefore.volumes) expect(removedVolumes).not.toContain(v);
    expect(await h.fleet.leftovers(crashedId)).toMatchObject({ containers: [] });

    await until(
      () => tasks.every((t) => h.orchestrator.task(t.uuid)?.status === 'done'),
      360_000,
      'all the tasks done',
    );
    for (const t of tasks) expect(doneOnce(h, t)).toEqual([['done', 200]]);
    // The sibling never lost a task to the restart.
    const failures = sibling.lines
      .filter((l) => /task failed|no such volume|no longer exists/i.test(l.msg))
      .map((l) => JSON.stringify(l));
    expect(failures).toEqual([]);
    expect(sibling.lines.filter((l) => l.msg === 'task done').length).toBeGreaterThan(0);
  }, 590_000);
});
