import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { workerTmpDir } from '../../src/config/paths.js';
import { learnTask } from '../support/worker-fixtures.js';
import {
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
  WARN,
  type WorkerProcess,
} from '../support/worker-process.js';

// The worker's own fault, as an operator can meet it: something on the host (a sibling
// worker's recovery, a tmp cleaner) removes a running task's temp folder, so the upload
// of the model fails on a missing file. The task is fine: it is requeued, not reported
// failed, and done on its next delivery; only when attempts run out is it reported
// failed, with a reason that says it was the worker's fault.

describe.skipIf(!hasPodman && !requireEngines)('a worker fault in the middle of a task', () => {
  let h: Harness;
  useHarness(
    { msgTimeoutMs: 10_000 },
    (started) => {
      h = started;
    },
    { each: true },
  );

  /** Starts a worker, publishes a learn task that sleeps in train, and removes its temp folder then. */
  async function removeTempFolderDuringTrain(extra: string[]) {
    // Long enough to remove the folder while the submission still trains.
    const task = learnTask(h.storage, h.orchestrator, h.fixtures, { sleep: 5 });
    const worker = await h.fleet.start(await h.args(extra), { env: h.env });
    const [id] = h.nsqd.publish(TOPIC.learn, task.body) as [string];
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.step === 'train' && l.msg === 'step started',
      180_000,
      'the train step to start',
    );
    const workerTmp = workerTmpDir(await worker.workerId());
    const folders = (await readdir(workerTmp)).filter((f) => f.startsWith('compute-worker-task-'));
    expect(folders).toHaveLength(1);
    const folder = join(workerTmp, folders[0] as string);
    // As root the task's steps have sized filesystems mounted in it: a cleaner that
    // removes the folder has to detach them first.
    const mounts = (await readFile('/proc/self/mounts', 'utf8'))
      .split('\n')
      .map((line) => line.split(' ')[1] ?? '')
      .filter((point) => point.startsWith(`${folder}/`));
    for (const point of mounts.reverse()) await execa('umount', ['-l', point]);
    await rm(folder, { recursive: true });
    // The next delivery need not wait as long.
    h.storage.seed('data', task.data, { blob: '\n' });
    return { task, worker, id, workerTmp };
  }

  function expectNothingLeft(worker: WorkerProcess, workerTmp: string) {
    return (async () => {
      expect(await h.fleet.leftovers(await worker.workerId())).toEqual({
        containers: [],
        volumes: [],
      });
      expect(await readdir(workerTmp)).toEqual([]);
    })();
  }

  it('is requeued with a delay, not reported failed, then done on the next delivery', async () => {
    const { task, worker, id, workerTmp } = await removeTempFolderDuringTrain([]);
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      180_000,
      'the task done on its next delivery',
    );

    const requeued = worker.lines.find((l) => l.task === task.uuid && l.level === WARN && l.fault);
    expect(requeued).toMatchObject({ fault: 'worker', step: 'upload' });
    expect(requeued?.msg).toMatch(
      /^not the submission's fault, requeued: the worker could not run this task: .*ENOENT.*model\.tar\.gz/,
    );
    expect(worker.lines.filter((l) => l.task === task.uuid && isError(l))).toEqual([]);

    const req = commandsFor(h.nsqd, id).filter((c) => c.name === 'REQ');
    expect(req).toHaveLength(1);
    expect(Number(req[0]?.params[1])).toBeGreaterThan(0);
    expect(deliveriesOf(h.nsqd.stats(), TOPIC.learn, id).map((d) => d.attempts)).toEqual([1, 2]);
    // The orchestrator never heard of a failure.
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
    expect(h.orchestrator.task(task.uuid)?.status).toBe('done');
    await expectNothingLeft(worker, workerTmp);
  }, 400_000);

  it('when attempts run out, is reported failed as the worker fault', async () => {
    const { task, worker, id, workerTmp } = await removeTempFolderDuringTrain([
      '--max-attempts',
      '1',
    ]);
    const failed = await worker.waitForLine(
      (l) => l.task === task.uuid && isError(l),
      180_000,
      'the task reported failed',
    );
    expect(failed).toMatchObject({ fault: 'worker', step: 'upload' });
    expect(failed.msg).toMatch(
      /^task failed: the worker could not run this task: .*ENOENT.*model\.tar\.gz.* \(gave up after 1 attempt\)$/,
    );
    await h.nsqd.waitFor(
      (s) => s.topics.find((t) => t.name === TOPIC.learn)?.channels[0]?.finishCount === 1,
      30_000,
      'the message finished',
    );
    expect(commandsFor(h.nsqd, id).map((c) => c.name)).not.toContain('REQ');
    expect(deliveriesOf(h.nsqd.stats(), TOPIC.learn, id).map((d) => d.attempts)).toEqual([1]);
    const bodies = reportsOf(h.orchestrator, task.uuid).map((r) => r.body);
    expect(bodies).toEqual([
      {
        status: 'failed',
        error: {
          code: expect.any(String),
          step: 'upload',
          fault: 'worker',
          message: expect.stringMatching(
            /^the worker could not run this task: .*ENOENT.*model\.tar\.gz.* \(gave up after 1 attempt\)$/,
          ),
          retryable: true,
          attempts: 1,
        },
        usage: expect.objectContaining({ worker: await worker.workerId() }),
      },
    ]);
    // The log names the worker's temp folder; the report does not.
    expect(failed.msg).toContain(workerTmp);
    expect(JSON.stringify(bodies)).not.toContain(workerTmp);
    await expectNothingLeft(worker, workerTmp);
  }, 400_000);
});
