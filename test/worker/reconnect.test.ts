import { afterEach, describe, expect, it } from 'vitest';
import { type Nsqlookupd, startNsqlookupd } from '../support/nsq/index.js';
import { predictTask } from '../support/worker-fixtures.js';
import {
  commandsFor,
  type Harness,
  reportsOf,
  TOPIC,
  useHarness,
} from '../support/worker-harness.js';
import {
  hasPodman,
  ociRuntime,
  requireEngines,
  type WorkerProcess,
} from '../support/worker-process.js';

// nsqd going away and coming back on the same port does not need a worker restart,
// whether the worker finds nsqd through nsqlookupd or connects to it directly. And a
// command line written for the original (single-dash flags, Go durations) runs as is.

describe.skipIf(!hasPodman && !requireEngines)('nsqd restarts and original command lines', () => {
  let h: Harness;
  useHarness(
    { msgTimeoutMs: 5000 },
    (started) => {
      h = started;
    },
    { each: true },
  );
  let lookupd: Nsqlookupd | undefined;

  afterEach(async () => {
    await lookupd?.stop();
    lookupd = undefined;
  });

  const done = (w: WorkerProcess, uuid: string) =>
    w.waitForLine((l) => l.task === uuid && l.msg === 'task done', 180_000, `task ${uuid} done`);

  /** nsqd (and, when given, nsqlookupd too) goes away and comes back; the worker goes on. */
  async function survivesRestart(worker: WorkerProcess, alsoDown?: Nsqlookupd) {
    const before = predictTask(h.storage, h.orchestrator, h.fixtures);
    h.nsqd.publish(TOPIC.predict, before.body);
    await done(worker, before.uuid);

    await alsoDown?.stop();
    await h.nsqd.restart({ downMs: 1500 });
    await worker.waitForLine(
      (l) => l.msg.includes('connection to nsqd closed'),
      30_000,
      'the lost connection noticed',
    );
    // With nsqlookupd down too, the worker can only find nsqd again once it is back.
    await alsoDown?.start();
    const after = predictTask(h.storage, h.orchestrator, h.fixtures);
    h.nsqd.publish(TOPIC.predict, after.body);
    await done(worker, after.uuid);
    expect(reportsOf(h.orchestrator, after.uuid).map((r) => r.body.status)).toEqual(['done']);
    expect(worker.child.exitCode).toBeNull();
  }

  it('through nsqlookupd, a task published after nsqd and nsqlookupd restarted is done', async () => {
    lookupd = await startNsqlookupd({ nsqds: [h.nsqd] });
    // The topic exists before the worker asks nsqlookupd for it.
    h.nsqd.getTopic(TOPIC.predict);
    const worker = await h.fleet.start(
      await h.args([], undefined, ['--nsqlookupd-urls', lookupd.address]),
      { env: h.env },
    );
    await survivesRestart(worker, lookupd);
  }, 300_000);

  it('connected directly, a task published after an nsqd restart is done', async () => {
    const worker = await h.fleet.start(await h.args(), { env: h.env });
    await survivesRestart(worker);
  }, 300_000);

  it('a connection lost mid-task: the result is reported once, the redelivery is harmless', async () => {
    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 6 });
    const [id] = h.nsqd.publish(TOPIC.predict, task.body) as [string];
    const worker = await h.fleet.start(await h.args(), { env: h.env });
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.step === 'predict' && l.msg === 'step started',
      120_000,
      'the predict step to start',
    );
    // A clean restart keeps the message: it comes back with attempts 2 while the first
    // run, whose connection is gone, still goes on.
    await h.nsqd.restart({ clean: true, downMs: 500 });
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.msg.includes('refused the result of this redelivery'),
      180_000,
      'the redelivery to end',
    );
    await h.nsqd.waitFor(
      (s) => s.topics.some((t) => t.channels[0]?.finishCount === 1),
      // Finished once the task's leftovers are removed: seconds on a loaded machine.
      60_000,
      'the message finished',
    );
    expect(worker.find('connection to nsqd was lost while the task ran')).toHaveLength(1);
    const reports = reportsOf(h.orchestrator, task.uuid);
    expect(reports[0]).toMatchObject({ status: 200, body: { status: 'done' } });
    expect(reports.filter((r) => r.body.status === 'failed')).toEqual([]);
    expect(h.orchestrator.task(task.uuid)?.status).toBe('done');
    expect(commandsFor(h.nsqd, id).filter((c) => c.name === 'FIN')).toHaveLength(1);
  }, 300_000);

  it("runs a task when started with the original worker's command line", async () => {
    const task = predictTask(h.storage, h.orchestrator, h.fixtures);
    h.nsqd.publish(TOPIC.predict, task.body);
    const state = await h.fleet.newStateDir();
    const seedStyle = [
      '-nsqd-tcp-addresses',
      h.nsqd.tcpAddress,
      '-learn-timeout',
      '20m0s',
      '-predict-timeout',
      '1h0m0s',
      '-docker-timeout',
      '15m0s',
      '-learn-parallelism',
      '1',
      '-predict-parallelism',
      '1',
      '-storage-host',
      h.storage.host,
      '-storage-port',
      String(h.storage.port),
      '-storage-user',
      'u',
      '-storage-password',
      h.passwords.storage,
      '-orchestrator-host',
      h.orchestrator.host,
      '-orchestrator-port',
      String(h.orchestrator.port),
      '-orchestrator-user',
      'u',
      '-orchestrator-password',
      h.passwords.orchestrator,
      // This host's own needs, written the same way.
      ...(ociRuntime ? ['-oci-runtime', ociRuntime] : []),
      '-state-dir',
      state,
      '-log-format',
      'json',
    ];
    const worker = await h.fleet.start(seedStyle);
    await done(worker, task.uuid);
    const started = worker.lines.find((l) => l.msg === 'worker started');
    expect(started).toMatchObject({ learnParallelism: 1, predictParallelism: 1 });
    // The Go duration was read: 1h is past nsqd's default 15m cap, which the worker says.
    expect(worker.find('--predict-timeout')[0]?.msg).toContain('1h0m0s');
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
  }, 300_000);
});
