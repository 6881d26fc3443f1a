import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeGpus, isRoot, makeFakeGpus } from '../support/fake-gpus.js';
import { predictTask } from '../support/worker-fixtures.js';
import { type Harness, reportsOf, TOPIC, until, useHarness } from '../support/worker-harness.js';
import { BIN, hasPodman, requireEngines } from '../support/worker-process.js';

// The daemon with GPUs: it refuses to start on a pool too small for its task slots, and
// a task that times out gives its GPU back for the next; every line of a task names its GPUs.

describe.skipIf((!hasPodman || !isRoot()) && !requireEngines)('a worker with GPUs', () => {
  let h: Harness;
  let gpus: FakeGpus;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });
  beforeAll(async () => {
    gpus = await makeFakeGpus({ count: 2 });
  });
  afterAll(() => gpus?.remove());

  it('refuses to start when the pool cannot serve every slot, naming the flags', async () => {
    const result = await execa(
      'node',
      [
        BIN,
        'run',
        ...(await h.args([
          '--learn-parallelism',
          '2',
          '--learn-gpus',
          '1',
          '--predict-gpus',
          '1',
          '--gpus',
          gpus.uuids[0] as string,
        ])),
      ],
      { reject: false, env: { ...h.env, PATH: gpus.path } },
    );
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toMatch(
      /the GPU pool has 1 GPU\(s\), but --learn-parallelism 2 × --learn-gpus 1 \+ --predict-parallelism 1 × --predict-gpus 1 needs 3/,
    );
  });

  it('gives the GPU of a task that timed out to the next, and names it in every line of the task', async () => {
    const worker = await h.fleet.start(
      await h.args([
        '--predict-gpus',
        '1',
        '--gpus',
        '1',
        '--gpu-cdi-kind',
        gpus.kind,
        '--predict-timeout',
        '4s',
        // The fake GPUs have no node at /dev/nvidiaN for runc to bind (docs/gpus.md).
        '--container-userns',
        'off',
      ]),
      { env: { ...h.env, PATH: gpus.path } },
    );
    const stuck = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 60 });
    const next = predictTask(h.storage, h.orchestrator, h.fixtures);
    h.nsqd.publish(TOPIC.predict, stuck.body);
    h.nsqd.publish(TOPIC.predict, next.body);
    await until(
      () => reportsOf(h.orchestrator, next.uuid).length > 0,
      180_000,
      'the second task reported',
    );
    expect(reportsOf(h.orchestrator, stuck.uuid).map((r) => r.body)).toEqual([
      expect.objectContaining({
        status: 'failed',
        error: expect.objectContaining({ code: 'CONTAINER_TIMEOUT', step: 'predict' }),
      }),
    ]);
    expect(reportsOf(h.orchestrator, next.uuid).map((r) => r.path)).toEqual([
      expect.stringMatching(/^\/preddone\//),
    ]);
    const named = `1:${gpus.uuids[1]}`;
    for (const uuid of [stuck.uuid, next.uuid]) {
      const lines = worker.lines.filter((l) => l.task === uuid);
      expect(lines.length).toBeGreaterThan(2);
      expect(lines.filter((l) => JSON.stringify(l.gpus) !== JSON.stringify([named]))).toEqual([]);
    }
  });
});
