import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Nsqlookupd, startNsqlookupd } from '../support/nsq/index.js';
import { predictTask } from '../support/worker-fixtures.js';
import {
  type Harness,
  logProblems,
  reportsOf,
  startHarness,
  TOPIC,
} from '../support/worker-harness.js';
import {
  assertBuilt,
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
  let lookupd: Nsqlookupd | undefined;

  beforeEach(async () => {
    assertBuilt();
    h = await startHarness({ msgTimeoutMs: 5000 });
  });

  afterEach(async () => {
    const problems = h ? logProblems(h) : [];
    await h?.stop();
    await lookupd?.stop();
    lookupd = undefined;
    expect(problems).toEqual([]);
  });

  const done = (w: WorkerProcess, uuid: string) =>
    w.waitForLine((l) => l.task === uuid && l.msg === 'task done', 180_000, `task ${uuid} done`);

  async function survivesRestart(worker: WorkerProcess) {
    const before = predictTask(h.storage, h.orchestrator, h.fixtures);
    h.nsqd.publish(TOPIC.predict, before.body);
    await done(worker, before.uuid);

    await h.nsqd.restart({ downMs: 1500 });
    await worker.waitForLine(
      (l) => l.msg.includes('connection to nsqd closed'),
      30_000,
      'the lost connection noticed',
    );
    const after = predictTask(h.storage, h.orchestrator, h.fixtures);
    h.nsqd.publish(TOPIC.predict, after.body);
    await done(worker, after.uuid);
    expect(reportsOf(h.orchestrator, after.uuid).map((r) => r.body.status)).toEqual(['done']);
    expect(worker.child.exitCode).toBeNull();
  }

  it('through nsqlookupd, a task published after an nsqd restart is done', async () => {
    lookupd = await startNsqlookupd({ nsqds: [h.nsqd] });
    // The topic exists before the worker asks nsqlookupd for it.
    h.nsqd.getTopic(TOPIC.predict);
    const worker = await h.fleet.start(
      await h.args([], undefined, ['--nsqlookupd-urls', lookupd.address]),
      { env: h.env },
    );
    await survivesRestart(worker);
  });

  it('connected directly, a task published after an nsqd restart is done', async () => {
    const worker = await h.fleet.start(await h.args(), { env: h.env });
    await survivesRestart(worker);
  });

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
  });
});
