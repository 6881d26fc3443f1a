import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { LABEL_STEP, LABEL_TASK } from '../../src/engine/labels.js';
import { learnTask } from '../support/worker-fixtures.js';
import {
  commandsFor,
  deliveriesOf,
  type Harness,
  reportsOf,
  sleep,
  TOPIC,
  useHarness,
} from '../support/worker-harness.js';
import { hasPodman, requireEngines, type WorkerProcess } from '../support/worker-process.js';

// A signal to the worker's whole process group (systemd's KillMode=control-group, Ctrl-C,
// `kill -- -PGID`) is the worker's, never the submission's: the worker drains, and the task
// runs again after the restart. SIGHUP drains as SIGTERM does.

describe.skipIf(!hasPodman && !requireEngines)('signals to the worker', () => {
  let h: Harness;
  useHarness(
    { msgTimeoutMs: 5000 },
    (started) => {
      h = started;
    },
    { each: true },
  );

  /** The steps of the task whose containers are running now. */
  const runningSteps = async (uuid: string) => {
    const listed = await execa(
      'podman',
      [
        'ps',
        '--filter',
        `label=${LABEL_TASK}=${uuid}`,
        '--format',
        `{{index .Labels "${LABEL_STEP}"}}`,
      ],
      { reject: false },
    );
    return String(listed.stdout ?? '').split('\n');
  };

  const trainStarted = (w: WorkerProcess, uuid: string) =>
    w.waitForLine(
      (l) => l.task === uuid && l.step === 'train' && l.msg === 'step started',
      180_000,
      'the train step to start',
    );

  /** Sends `signal` during train, and checks the drain, the requeue and the one done after a restart. */
  async function stoppedDuringTrain(signal: NodeJS.Signals, toGroup: boolean) {
    const task = learnTask(h.storage, h.orchestrator, h.fixtures, { sleep: 60 });
    const [id] = h.nsqd.publish(TOPIC.learn, task.body) as [string];
    const args = await h.args(['--shutdown-grace', '3s']);
    const worker = await h.fleet.start(args, { env: h.env, ownGroup: true });
    await trainStarted(worker, task.uuid);
    const deadline = Date.now() + 60_000;
    while (!(await runningSteps(task.uuid)).includes('train')) {
      if (Date.now() > deadline)
        throw new Error(`the train container never ran:\n${worker.tail()}`);
      await sleep(250);
    }
    // Past the shell's start: the submission is asleep.
    await sleep(2000);
    if (toGroup) process.kill(-worker.pid, signal);
    else worker.kill(signal);

    const exit = await worker.exited;
    expect(exit, JSON.stringify(exit) + worker.tail()).toMatchObject({ exitCode: 0 });
    expect(worker.find('stopping: draining running tasks')[0]).toMatchObject({ signal });
    expect(worker.find('task failed')).toEqual([]);
    expect(reportsOf(h.orchestrator, task.uuid)).toEqual([]);
    expect(commandsFor(h.nsqd, id).filter((c) => c.name !== 'TOUCH')).toMatchObject([
      { name: 'REQ', params: [id, '0'] },
    ]);
    expect(await h.fleet.leftovers(await worker.workerId())).toEqual({
      containers: [],
      volumes: [],
    });

    // The same worker started again gets it back; this time the data asks for no sleep.
    h.storage.seed('data', task.data, { blob: '\n' });
    const again = await h.fleet.start(args, { env: h.env });
    await again.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      180_000,
      'the requeued task done',
    );
    expect(deliveriesOf(h.nsqd.stats(), TOPIC.learn, id).map((d) => d.attempts)).toEqual([1, 2]);
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
    expect(commandsFor(h.nsqd, id).filter((c) => c.name === 'FIN')).toHaveLength(1);
  }

  it.each(['SIGTERM', 'SIGINT'] as const)(
    'a %s to the whole process group during train drains: requeued, then done once after a restart',
    (signal) => stoppedDuringTrain(signal, true),
    300_000,
  );

  it(
    'SIGHUP drains as SIGTERM does, and says so',
    () => stoppedDuringTrain('SIGHUP', false),
    300_000,
  );
});
