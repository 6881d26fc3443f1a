import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { closedPort } from '../support/http-stand-in.js';
import { get } from '../support/prometheus.js';
import { learnTask } from '../support/worker-fixtures.js';
import { type Harness, TOPIC, useHarness } from '../support/worker-harness.js';
import { BIN, hasPodman, requireEngines } from '../support/worker-process.js';

// What runs now: the daemon's GET /status, and `compute-worker status` reading it or,
// without an address, the journal in the state folder.

describe.skipIf(!hasPodman && !requireEngines)('status of a running worker', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });

  it('shows the running task, its step, attempt and time so far, and why no more are taken', async () => {
    const address = `127.0.0.1:${await closedPort()}`;
    const worker = await h.fleet.start(
      await h.args(['--metrics-address', address, '--learn-parallelism', '1']),
      { env: h.env },
    );
    await worker.waitForLine((l) => l.msg.startsWith('metrics on'), 240_000, 'metrics served');
    const id = await worker.workerId();
    const task = learnTask(h.storage, h.orchestrator, h.fixtures, { sleep: 40 });
    h.nsqd.publish(TOPIC.learn, task.body);
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.step === 'train' && l.msg === 'step started',
      180_000,
      'the train step to start',
    );

    const answer = await get(address, '/status');
    expect(answer.status).toBe(200);
    const status = JSON.parse(answer.body);
    // The answer as an operator sees it, for the documentation.
    process.stderr.write(`GET /status: ${answer.body}`);
    expect(status).toEqual({
      worker: {
        id,
        version: expect.stringMatching(/^\d+\.\d+\.\d+/),
        draining: false,
        taking_tasks: true,
        not_taking: ['every learn slot is busy (1)'],
      },
      tasks: [
        {
          uuid: task.uuid,
          kind: 'learn',
          step: 'train',
          elapsed_s: expect.any(Number),
          attempt: 1,
        },
      ],
      source: 'daemon',
    });

    // Without an address: the journal of the state folder.
    const fromState = await execa('node', [
      BIN,
      'status',
      '--state-dir',
      worker.stateDir,
      '--json',
    ]);
    expect(JSON.parse(fromState.stdout)).toEqual({
      worker: { id, version: status.worker.version },
      tasks: [
        expect.objectContaining({ uuid: task.uuid, kind: 'learn', step: 'train', attempt: 1 }),
      ],
      source: 'state folder',
    });

    const viaCli = await execa('node', [BIN, 'status', '--metrics-address', address, '--json']);
    expect(JSON.parse(viaCli.stdout)).toMatchObject({
      worker: { id },
      tasks: [{ uuid: task.uuid }],
    });
    const text = await execa('node', [BIN, 'status', '--metrics-address', address]);
    expect(text.stdout).toContain(`learn ${task.uuid}: train,`);
    expect(text.stdout).toContain('taking tasks (every learn slot is busy (1))');

    await worker.waitForLine((l) => l.task === task.uuid && l.msg === 'task done', 180_000, 'done');
    // Its journal entry goes just after the answer to nsqd.
    let after = JSON.parse((await get(address, '/status')).body);
    for (let i = 0; i < 300 && after.tasks.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = JSON.parse((await get(address, '/status')).body);
    }
    expect(after.tasks).toEqual([]);
    expect(after.worker).toMatchObject({ taking_tasks: true, draining: false });
    expect(after.worker.not_taking).toBeUndefined();
  }, 400_000);
});
