import { describe, expect, it } from 'vitest';
import { learnTask, predictTask } from '../support/worker-fixtures.js';
import {
  claimsOf,
  commandsFor,
  deliveriesOf,
  type Harness,
  reportsOf,
  TOPIC,
  useHarness,
} from '../support/worker-harness.js';
import {
  hasPodman,
  isError,
  requireEngines,
  type WorkerProcess,
} from '../support/worker-process.js';

// SIGTERM drains: no new message is taken, running tasks get --shutdown-grace, then are
// cancelled (containers removed) and handed back to nsqd at once. A second signal does
// not wait.

describe.skipIf(!hasPodman && !requireEngines)('graceful shutdown', () => {
  let h: Harness;
  useHarness(
    { msgTimeoutMs: 5000 },
    (started) => {
      h = started;
    },
    { each: true },
  );

  const stepStarted = (w: WorkerProcess, uuid: string, step: string) =>
    w.waitForLine(
      (l) => l.task === uuid && l.step === step && l.msg === 'step started',
      120_000,
      `the ${step} step to start`,
    );
  const predictStarted = (w: WorkerProcess, uuid: string) => stepStarted(w, uuid, 'predict');

  it('a running task finishes within the grace period; nothing new is taken; exit 0', async () => {
    const running = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 4 });
    const waiting = predictTask(h.storage, h.orchestrator, h.fixtures);
    h.nsqd.publish(TOPIC.predict, running.body);
    const worker = await h.fleet.start(await h.args(['--shutdown-grace', '5m']), { env: h.env });
    await predictStarted(worker, running.uuid);
    h.nsqd.publish(TOPIC.predict, waiting.body);
    worker.kill('SIGTERM');

    const exit = await worker.exited;
    expect(exit, JSON.stringify(exit) + worker.tail()).toMatchObject({ exitCode: 0 });
    expect(reportsOf(h.orchestrator, running.uuid).map((r) => r.body.status)).toEqual(['done']);
    expect(claimsOf(h.orchestrator, waiting.uuid)).toEqual([]);
    expect(worker.lines.filter((l) => l.task === waiting.uuid)).toEqual([]);
    expect(worker.find('worker stopped')).toHaveLength(1);
    // The waiting message is still nsqd's to give.
    const channel = h.nsqd.stats().topics.find((t) => t.name === TOPIC.predict)?.channels[0];
    expect(channel?.finishCount).toBe(1);
    expect((channel?.depth ?? 0) + (channel?.inFlight ?? 0)).toBe(1);
  }, 240_000);

  it('past the grace period the task is cancelled, cleaned up, requeued and done later', async () => {
    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 60 });
    const [id] = h.nsqd.publish(TOPIC.predict, task.body) as [string];
    const worker = await h.fleet.start(await h.args(['--shutdown-grace', '1s']), { env: h.env });
    await predictStarted(worker, task.uuid);
    const signalled = Date.now();
    worker.kill('SIGTERM');

    expect(await worker.exited).toMatchObject({ exitCode: 0 });
    // Far sooner than the 60 s the submission wanted.
    expect(Date.now() - signalled).toBeLessThan(45_000);
    expect(commandsFor(h.nsqd, id).filter((c) => c.name !== 'TOUCH')).toMatchObject([
      { name: 'REQ', params: [id, '0'] },
    ]);
    expect(reportsOf(h.orchestrator, task.uuid)).toEqual([]);
    expect(await h.fleet.leftovers(await worker.workerId())).toEqual({
      containers: [],
      volumes: [],
    });

    // The next worker gets it at once; this time the data asks for no sleep.
    h.storage.seed('data', task.data, { blob: '\n' });
    const next = await h.fleet.start(await h.args(), { env: h.env });
    await next.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      120_000,
      'the requeued task done',
    );
    expect(deliveriesOf(h.nsqd.stats(), TOPIC.predict, id).map((d) => d.attempts)).toEqual([1, 2]);
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
  }, 240_000);

  it('a second signal stops at once, still removing the containers', async () => {
    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 60 });
    const [id] = h.nsqd.publish(TOPIC.predict, task.body) as [string];
    const worker = await h.fleet.start(await h.args(['--shutdown-grace', '5m']), { env: h.env });
    await predictStarted(worker, task.uuid);
    worker.kill('SIGTERM');
    await worker.waitForLine(
      (l) => l.msg === 'waiting for running tasks to finish',
      30_000,
      'the drain to begin',
    );
    const signalled = Date.now();
    worker.kill('SIGTERM');

    await worker.exited;
    expect(Date.now() - signalled).toBeLessThan(45_000);
    expect(worker.find('cancelling running tasks')).toHaveLength(1);
    expect(await h.fleet.leftovers(await worker.workerId())).toEqual({
      containers: [],
      volumes: [],
    });
    expect(reportsOf(h.orchestrator, task.uuid)).toEqual([]);
    expect(commandsFor(h.nsqd, id).filter((c) => c.name === 'FIN')).toEqual([]);
  }, 240_000);

  // A stop sent to the worker's whole process group (Ctrl-C in a terminal, timeout(1),
  // systemd's KillMode=control-group) stays with the worker: the engine's clients are in
  // groups of their own, so no submission sees the signal, and the task is not blamed.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} to the group during train: requeued, never failed, done after a restart`, async () => {
      const task = learnTask(h.storage, h.orchestrator, h.fixtures, { sleep: 60 });
      const [id] = h.nsqd.publish(TOPIC.learn, task.body) as [string];
      const worker = await h.fleet.start(await h.args(['--shutdown-grace', '3s']), {
        env: h.env,
        group: true,
      });
      await stepStarted(worker, task.uuid, 'train');
      worker.killGroup(signal);

      expect(await worker.exited).toMatchObject({ exitCode: 0 });
      // The submission did not end by the signal: the worker cancelled it after the grace.
      expect(worker.find('task cancelled by shutdown: requeued')).toHaveLength(1);
      expect(worker.lines.filter(isError)).toEqual([]);
      expect(reportsOf(h.orchestrator, task.uuid)).toEqual([]);
      expect(await h.fleet.leftovers(await worker.workerId())).toEqual({
        containers: [],
        volumes: [],
      });

      h.storage.seed('data', task.data, { blob: '\n' });
      const next = await h.fleet.start(await h.args([], worker.stateDir), { env: h.env });
      await next.waitForLine(
        (l) => l.task === task.uuid && l.msg === 'task done',
        180_000,
        'the requeued task done',
      );
      expect(deliveriesOf(h.nsqd.stats(), TOPIC.learn, id).map((d) => d.attempts)).toEqual([1, 2]);
      expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
    }, 300_000);
  }

  it('a submission that fails while the worker drains is requeued, not reported failed', async () => {
    // What a stop by a supervisor that kills the containers too looks like to the worker.
    const task = learnTask(h.storage, h.orchestrator, h.fixtures, { sleep: 3, exit: 143 });
    const [id] = h.nsqd.publish(TOPIC.learn, task.body) as [string];
    const worker = await h.fleet.start(await h.args(['--shutdown-grace', '5m']), { env: h.env });
    await stepStarted(worker, task.uuid, 'train');
    worker.kill('SIGTERM');
    expect(await worker.exited).toMatchObject({ exitCode: 0 });
    expect(worker.find('a container ended while the worker was stopping')).toHaveLength(1);
    expect(reportsOf(h.orchestrator, task.uuid)).toEqual([]);
    const channel = h.nsqd.stats().topics.find((t) => t.name === TOPIC.learn)?.channels[0];
    expect(channel?.requeueCount).toBe(1);
    expect(deliveriesOf(h.nsqd.stats(), TOPIC.learn, id)).toHaveLength(1);
  }, 240_000);

  it('SIGHUP is logged and the worker goes on with its task', async () => {
    const task = learnTask(h.storage, h.orchestrator, h.fixtures, { sleep: 4 });
    h.nsqd.publish(TOPIC.learn, task.body);
    const worker = await h.fleet.start(await h.args(), { env: h.env, group: true });
    await stepStarted(worker, task.uuid, 'train');
    worker.killGroup('SIGHUP');
    await worker.waitForLine((l) => l.msg.startsWith('SIGHUP'), 10_000, 'SIGHUP logged');
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      120_000,
      'the task done',
    );
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
    expect(worker.child.exitCode).toBe(null);
    worker.kill('SIGTERM');
    expect(await worker.exited).toMatchObject({ exitCode: 0 });
  }, 240_000);
});
