import { afterEach, describe, expect, it } from 'vitest';
import { type Nsqlookupd, startNsqlookupd } from '../support/nsq/index.js';
import { predictTask } from '../support/worker-fixtures.js';
import { type Harness, reportsOf, TOPIC, useHarness } from '../support/worker-harness.js';
import { hasPodman, ociRuntime, requireEngines } from '../support/worker-process.js';

// The original worker had no subcommands and was a Go program: its image ran
// `compute-worker -nsqlookupd-urls host:4161 -learn-parallelism 2 ...`, and wrapper
// scripts add their own values after the defaults, relying on the last one winning.

describe.skipIf(!hasPodman && !requireEngines)("the original worker's command line", () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });
  let lookupd: Nsqlookupd | undefined;
  afterEach(async () => {
    await lookupd?.stop();
    lookupd = undefined;
  });

  it('starts the daemon without a command, each repeated flag taking its last value', async () => {
    lookupd = await startNsqlookupd({ nsqds: [h.nsqd] });
    h.nsqd.getTopic(TOPIC.predict);
    const task = predictTask(h.storage, h.orchestrator, h.fixtures);
    h.nsqd.publish(TOPIC.predict, task.body);
    const state = await h.fleet.newStateDir();
    const worker = await h.fleet.start(
      [
        '-nsqlookupd-urls',
        lookupd.address,
        '-learn-parallelism',
        '1',
        '-predict-parallelism',
        '1',
        '-lookupd-poll-interval',
        '1m0s',
        '-learn-parallelism',
        '2',
        '-predict-parallelism=3',
        '-lookupd-poll-interval',
        '1s',
        '-storage-host',
        h.storage.host,
        '-storage-port',
        String(h.storage.port),
        '-orchestrator-host',
        h.orchestrator.host,
        '-orchestrator-port',
        String(h.orchestrator.port),
        ...(ociRuntime ? ['-oci-runtime', ociRuntime] : []),
        '-state-dir',
        state,
        '-log-format',
        'json',
      ],
      { env: h.env, command: [] },
    );
    const started = await worker.waitForLine(
      (l) => l.msg === 'worker started',
      120_000,
      'the worker started',
    );
    expect(started).toMatchObject({ learnParallelism: 2, predictParallelism: 3 });
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      240_000,
      'the task done',
    );
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
    expect(worker.child.exitCode).toBeNull();
  }, 400_000);
});
