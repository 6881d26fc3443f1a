import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskEnv } from '../../src/tasks/context.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  doneReports,
  exampleContext,
  exampleData,
  leftovers,
  newIds,
  type Outcome,
  podmanMissing,
  prebuild,
  runTask,
  scriptRunnerContext,
  startWorld,
  type TaskWorld,
  tarGz,
} from '../support/task-fixtures.js';

// --disk-limit: what a task's containers write into their volumes is measured while they
// run. A submission that writes past it is killed and the task fails with a message
// naming the limit; a sparse file is counted by what it really takes on disk.

const LIMIT = 20 * 1024 ** 2;
// Writes 200 MB, then would sleep far past the step's timeout: only the disk limit
// stops it in time, so a DISK_LIMIT failure (not a timeout) shows the container was killed.
const flood = (dir: string) =>
  `dd if=/dev/zero of=${dir}/flood bs=1M count=200 2>/dev/null\necho written\nsleep 300\n`;

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'disk limit of a task',
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    // W: the example workflow; RW/R: the script runner as workflow and as submission.
    const ids = newIds('W', 'RW', 'R', 'test');

    beforeAll(async () => {
      world = await startWorld();
      const [problem, runner] = await Promise.all([
        exampleContext('problem'),
        scriptRunnerContext(),
      ]);
      world.storage.seed('problem', ids.W, { blob: problem });
      world.storage.seed('problem', ids.RW, { blob: runner });
      world.storage.seed('algo', ids.R, { blob: runner });
      world.storage.seed('data', ids.test, { blob: await exampleData('test.csv') });
      const env = await world.env();
      await prebuild(env, [
        ['workflow', problem],
        ['workflow', runner],
        ['submission', runner],
      ]);
    });

    afterAll(() => world?.close());

    const limitedEnv = () =>
      world.env({ diskLimitBytes: LIMIT, learnTimeoutMs: 120_000, predictTimeoutMs: 120_000 });

    function data(content: string): string {
      const { uuid } = newIds('uuid');
      world.storage.seed('data', uuid, { blob: content });
      return uuid;
    }

    function learn(fields: Record<string, unknown>) {
      return {
        ...newIds('uuid', 'model_end'),
        workflow: ids.W,
        algo: ids.R,
        test_data: [ids.test],
        model_start: null,
        rank: 0,
        ...fields,
      };
    }

    async function expectDiskLimit(env: TaskEnv, outcome: Outcome, step: 'train' | 'predict') {
      const { report } = outcome;
      expect(report.status).toBe('failed');
      expect(report.error?.code, report.error?.describe()).toBe('DISK_LIMIT');
      expect(report.failedStep).toBe(step);
      expect(report.error?.retryable).toBe(false);
      // Polled, the writer is stopped past the limit; on a sized filesystem (root with
      // rootful podman) it is held at the limit and gets "no space left on device".
      expect(report.error?.message).toMatch(
        new RegExp(
          `the submission's ${step} step filled its writable volumes with [0-9.]+ MiB \\(\\d+ bytes\\)(, past the --disk-limit of 20m: it was stopped|, all the --disk-limit of 20m allows: writing more failed with "no space left on device")$`,
        ),
      );
      const seen = Number(/\((\d+) bytes\)/.exec(report.error?.message ?? '')?.[1]);
      expect(seen).toBeGreaterThan(LIMIT * 0.9);
      expect(doneReports(world, report.uuid).map((r) => r.body)).toEqual([
        expect.objectContaining({
          status: 'failed',
          error: expect.objectContaining({ code: 'DISK_LIMIT', step, fault: 'task' }),
        }),
      ]);
      expect(await leftovers(report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    }

    describe.concurrent('each killed and reported failed, leaving nothing behind', () => {
      it('a submission that writes past the limit into its model', async () => {
        const env = await limitedEnv();
        const outcome = await runTask(
          world,
          env,
          learn({ train_data: [data(flood('/data/model'))] }),
        );
        await expectDiskLimit(env, outcome, 'train');
      });

      it('a submission that writes past the limit into its predictions', async () => {
        const env = await limitedEnv();
        const { uuid: modelUuid } = newIds('uuid');
        world.storage.seed('model', modelUuid, {
          blob: await tarGz({ 'model.txt': 'weights\n' }),
          meta: { uuid: modelUuid, algo: ids.R, timestamp_upload: 1 },
        });
        const task = {
          ...newIds('uuid'),
          workflow: ids.W,
          model: modelUuid,
          data: data(flood('/data/test/pred')),
        };
        const outcome = await runTask(world, env, task);
        await expectDiskLimit(env, outcome, 'predict');
      });

      it('a submission that writes past the limit and exits before the next measurement', async () => {
        const env = await world.env({ diskLimitBytes: LIMIT });
        const quick = 'dd if=/dev/zero of=/data/train/pred/flood bs=1M count=60 2>/dev/null\n';
        const outcome = await runTask(world, env, learn({ train_data: [data(quick)] }));
        await expectDiskLimit(env, outcome, 'train');
      });
    });

    it('a sparse file of 1 GiB apparent size passes the bound, and is refused as a model no step could hold', async () => {
      const env = await limitedEnv();
      const sparse =
        'truncate -s 1G /data/model/sparse\nstat -c "apparent %s" /data/model/sparse\n';
      const perf = `echo '{"perf": 1, "train_perf": {}, "test_perf": {}}' > /hidden_data/perf/performance.json\n`;
      const outcome = await runTask(
        world,
        env,
        learn({ workflow: ids.RW, train_data: [data(sparse)], test_data: [data(perf)] }),
      );
      // The train step wrote it (it costs the disk nothing); reading the model back counts
      // it whole, as staging it for the next rank would write it.
      expect(outcome.logs).toContain(`apparent ${1024 ** 3}`);
      expect(outcome.report.error?.code, outcome.report.error?.describe()).toBe('OUTPUT_INVALID');
      expect(outcome.report.failedStep).toBe('upload');
      expect(outcome.report.error?.message).toMatch(/a container step may write \(--disk-limit\)/);
      expect(await leftovers(outcome.report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    });
  },
);
