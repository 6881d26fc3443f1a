import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.js';
import type { StepName, TaskEnv } from '../../src/tasks/context.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  doneReports,
  leftovers,
  newIds,
  type Outcome,
  podmanMissing,
  runTask,
  seedRunner,
  startWorld,
  type TaskWorld,
  tarGz,
} from '../support/task-fixtures.js';

// What a submission leaves is read back under caps, and its predictions reach the scorer
// as regular files only. The submission and the workflow are the script runner (see
// scriptRunnerContext): the submission runs the train (or predict) data as scripts, the
// workflow's perf step runs the hidden test data as its scorer.

const MIB = 1024 ** 2;

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'outputs the scorer can trust',
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    const ids = { R: '' };

    beforeAll(async () => {
      world = await startWorld();
      ids.R = await seedRunner(world);
    });

    afterAll(() => world?.close());

    function data(content: string | Buffer, uuid = newIds('uuid').uuid): string {
      world.storage.seed('data', uuid, { blob: content });
      return uuid;
    }

    /** A scorer that says what it read: 1.0 when the prediction is the hidden file itself. */
    function scorer(secret: string): string {
      return [
        `# ${secret}`,
        'echo "scorer ran"',
        'p=/submission_data/test/pred/$(basename "$0")',
        'cat "$p" 2>&1 || true',
        'if cmp -s "$p" "$0"; then perf=1; else perf=0; fi',
        `printf '{"perf": %s, "train_perf": {}, "test_perf": {}}\\n' "$perf" > /hidden_data/perf/performance.json`,
        '',
      ].join('\n');
    }

    const GOOD_SCORER = `echo '{"perf": 0.5, "train_perf": {}, "test_perf": {}}' > /hidden_data/perf/performance.json\n`;

    function learn(train: string, test: string, fields: Record<string, unknown> = {}) {
      return {
        ...newIds('uuid', 'model_end'),
        workflow: ids.R,
        algo: ids.R,
        train_data: [data(train)],
        test_data: [test],
        model_start: null,
        rank: 0,
        ...fields,
      };
    }

    /** A rank-1 learn task whose start model in storage is `blob`. */
    async function fromStartModel(env: TaskEnv, blob: Buffer) {
      const { uuid } = newIds('uuid');
      world.storage.seed('model', uuid, {
        blob,
        meta: { uuid, algo: ids.R, timestamp_upload: 1 },
      });
      const task = learn('true\n', data(GOOD_SCORER), { rank: 1, model_start: uuid });
      return { uuid, outcome: await runTask(world, env, task) };
    }

    async function expectFailed(
      env: TaskEnv,
      outcome: Outcome,
      expected: { code: ErrorCode; step: StepName; message: RegExp },
    ) {
      const { report } = outcome;
      expect(report.status).toBe('failed');
      expect(report.error?.code, report.error?.describe()).toBe(expected.code);
      expect(report.error?.message).toMatch(expected.message);
      expect(report.failedStep).toBe(expected.step);
      expect(report.error?.retryable).toBe(false);
      const reports = doneReports(world, report.uuid);
      expect(reports.map((r) => [r.path, r.body])).toEqual([
        [
          `/${report.kind === 'learn' ? 'learndone' : 'preddone'}/${report.uuid}`,
          expect.objectContaining({
            status: 'failed',
            error: expect.objectContaining({ code: expected.code, step: expected.step }),
          }),
        ],
      ]);
      expect(await leftovers(report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    }

    describe.concurrent('each fails the task, naming what was wrong, leaving nothing', () => {
      it('predictions that are symbolic links to the hidden test data', async () => {
        const env = await world.env();
        const secret = `secret${randomBytes(6).toString('hex')}`;
        const test = data(scorer(secret));
        const attack = `ln -s /hidden_data/test/${test} /data/test/pred/${test}\n`;
        const outcome = await runTask(world, env, learn(attack, test));
        await expectFailed(env, outcome, {
          code: 'OUTPUT_INVALID',
          step: 'perf',
          message: new RegExp(
            `prediction '/data/test/pred/${test}' is a symbolic link \\(to '/hidden_data/test/${test}'\\)`,
          ),
        });
        // The scorer never ran, so it never read the hidden file through the link.
        expect(outcome.logs).not.toContain('scorer ran');
        expect(outcome.logs.filter((line) => line.includes(secret))).toEqual([]);
      });

      it.each([
        { what: 'a FIFO', script: 'mkfifo /data/test/pred/p', kind: 'a FIFO' },
        {
          what: 'a hard link',
          script: 'echo label > /data/train/pred/a && ln /data/train/pred/a /data/train/pred/b',
          kind: 'a hard link',
          folder: '/data/train/pred',
        },
        {
          what: 'a link in a sub-folder',
          script: 'mkdir /data/test/pred/sub && ln -s ../../x /data/test/pred/sub/p',
          kind: 'a symbolic link',
          name: 'sub/p',
        },
      ])('a prediction that is $what', async ({ script, kind, folder, name }) => {
        const env = await world.env();
        const outcome = await runTask(world, env, learn(`${script}\n`, data(GOOD_SCORER)));
        // tar names the first of two hard-linked names as the file, the other as the link.
        const where = `${folder ?? '/data/test/pred'}/${name ?? (folder ? '(a|b)' : 'p')}`;
        await expectFailed(env, outcome, {
          code: 'OUTPUT_INVALID',
          step: 'perf',
          message: new RegExp(`prediction '${where}' is ${kind}`),
        });
      });

      it('predictions past --max-prediction-size (a 400 MiB sparse file)', async () => {
        const env = await world.env({ maxPredictionBytes: 64 * MIB });
        const script = 'dd if=/dev/zero of=/data/test/pred/p bs=1 count=0 seek=400M\n';
        const outcome = await runTask(world, env, learn(script, data(GOOD_SCORER)));
        await expectFailed(env, outcome, {
          code: 'OUTPUT_INVALID',
          step: 'perf',
          message: /predictions are larger than the 64m allowed by --max-prediction-size/,
        });
      });

      it('a sparse prediction past --disk-limit: its checked copy would be written whole', async () => {
        const env = await world.env({ diskLimitBytes: 64 * MIB });
        const script = 'dd if=/dev/zero of=/data/test/pred/p bs=1 count=0 seek=400M\n';
        const outcome = await runTask(world, env, learn(script, data(GOOD_SCORER)));
        await expectFailed(env, outcome, {
          code: 'OUTPUT_INVALID',
          step: 'perf',
          message:
            /predictions are larger than the 64m a container step may write \(--disk-limit\)/,
        });
      });

      it('predictions of both folders together past --max-prediction-size', async () => {
        const env = await world.env({ maxPredictionBytes: 3 * MIB });
        const script = [
          'dd if=/dev/urandom of=/data/train/pred/p bs=1M count=2',
          'dd if=/dev/urandom of=/data/test/pred/p bs=1M count=2',
          '',
        ].join('\n');
        const outcome = await runTask(world, env, learn(script, data(GOOD_SCORER)));
        await expectFailed(env, outcome, {
          code: 'OUTPUT_INVALID',
          step: 'perf',
          message: /larger than the 3m allowed by --max-prediction-size/,
        });
      });

      it('a model left in /data/model past --max-model-size', async () => {
        const env = await world.env({ maxModelBytes: 2 * MIB });
        const script = 'dd if=/dev/urandom of=/data/model/weights bs=1M count=3\n';
        const task = learn(script, data(GOOD_SCORER));
        const outcome = await runTask(world, env, task);
        await expectFailed(env, outcome, {
          code: 'OUTPUT_INVALID',
          step: 'upload',
          message:
            /model the submission left in \/data\/model is larger than the 2m allowed by --max-model-size/,
        });
        expect(world.storage.object('model', task.model_end)).toBeUndefined();
      });

      it('a start model from storage that is a gzip bomb stops at --max-model-size', async () => {
        const env = await world.env({ maxModelBytes: 64 * MIB });
        // 4096 gzip members of 1 MiB of zeros each: 4 GiB unpacked from about 4 MB, made in
        // milliseconds (a long gzip here would stall the stand-ins of the concurrent tests).
        const member = gzipSync(Buffer.alloc(MIB), { level: 9 });
        const bomb = Buffer.concat(Array.from({ length: 4096 }, () => member));
        expect(bomb.length).toBeLessThan(8 * MIB);
        const { uuid, outcome } = await fromStartModel(env, bomb);
        await expectFailed(env, outcome, {
          code: 'ARCHIVE_REJECTED',
          step: 'stage',
          message: new RegExp(
            `model ${uuid} from storage unpacks to more than the 64m allowed by --max-model-size`,
          ),
        });
      });

      it('a sparse model of 400 MiB past --disk-limit: no later step could hold it', async () => {
        const env = await world.env({ diskLimitBytes: 64 * MIB });
        const script = 'dd if=/dev/zero of=/data/model/weights bs=1 count=0 seek=400M\n';
        const task = learn(script, data(GOOD_SCORER));
        const outcome = await runTask(world, env, task);
        await expectFailed(env, outcome, {
          code: 'OUTPUT_INVALID',
          step: 'upload',
          message:
            /model the submission left in \/data\/model is larger than the 64m a container step may write \(--disk-limit\)/,
        });
        expect(world.storage.object('model', task.model_end)).toBeUndefined();
      });

      it('a start model from storage that unpacks past --disk-limit', async () => {
        const env = await world.env({ diskLimitBytes: 32 * MIB });
        const { uuid, outcome } = await fromStartModel(
          env,
          await tarGz({ weights: Buffer.alloc(100 * MIB) }),
        );
        await expectFailed(env, outcome, {
          code: 'ARCHIVE_REJECTED',
          step: 'stage',
          message: new RegExp(
            `model ${uuid} from storage unpacks to more than the 32m a container step may write \\(--disk-limit\\)`,
          ),
        });
      });

      it('a start model within the cap that takes more room on disk than the step has', async () => {
        // 6000 files of one byte: 6 KB by their sizes, a block (4 KiB) each on disk.
        const env = await world.env({ diskLimitBytes: 16 * MIB });
        const files = Object.fromEntries(
          Array.from({ length: 6000 }, (_, i) => [`w/${i}`, 'x'] as const),
        );
        const { uuid, outcome } = await fromStartModel(env, await tarGz(files));
        await expectFailed(env, outcome, {
          code: 'ARCHIVE_REJECTED',
          step: 'stage',
          message: new RegExp(
            `model ${uuid} from storage does not fit in the 16m a container step may write \\(--disk-limit\\)`,
          ),
        });
      });

      describe('predict', () => {
        async function predict(env: TaskEnv, script: string) {
          const { uuid: modelUuid } = newIds('uuid');
          world.storage.seed('model', modelUuid, {
            blob: await tarGz({ 'model.txt': 'weights\n' }),
            meta: { uuid: modelUuid, algo: ids.R, timestamp_upload: 1 },
          });
          const task = { ...newIds('uuid'), workflow: ids.R, model: modelUuid, data: data(script) };
          return { task, outcome: await runTask(world, env, task) };
        }

        it.each([
          { what: 'a FIFO', script: 'mkfifo "/data/test/pred/$(basename "$0")"', kind: 'a FIFO' },
          {
            what: 'a symbolic link',
            script: 'ln -s "/data/test/$(basename "$0")" "/data/test/pred/$(basename "$0")"',
            kind: 'a symbolic link',
          },
        ])('a prediction file that is $what', async ({ script, kind }) => {
          const env = await world.env();
          const { task, outcome } = await predict(env, `${script}\n`);
          await expectFailed(env, outcome, {
            code: 'OUTPUT_INVALID',
            step: 'upload',
            message: new RegExp(`prediction '/data/test/pred/${task.data}' is ${kind}`),
          });
        });

        it('a prediction file past --max-prediction-size (a 400 MiB sparse file)', async () => {
          const env = await world.env({ maxPredictionBytes: 64 * MIB });
          const script =
            'dd if=/dev/zero "of=/data/test/pred/$(basename "$0")" bs=1 count=0 seek=400M\n';
          const { outcome } = await predict(env, script);
          await expectFailed(env, outcome, {
            code: 'OUTPUT_INVALID',
            step: 'upload',
            message: /predictions are larger than the 64m allowed by --max-prediction-size/,
          });
        });

        it('a prediction within the cap is uploaded as it was written', async () => {
          const env = await world.env({ maxPredictionBytes: MIB });
          const script = 'printf "label\\nalpha\\n" > "/data/test/pred/$(basename "$0")"\n';
          const { outcome } = await predict(env, script);
          expect(outcome.report.status, outcome.report.error?.describe()).toBe('done');
        });
      });
    });

    it('a learn task within the caps scores checked copies of its predictions', async () => {
      const env = await world.env({ maxPredictionBytes: MIB, maxModelBytes: MIB });
      const test = data(
        [
          'echo "scorer ran"',
          'ls -l /submission_data/test/pred /submission_data/train/pred',
          'grep -q "^label$" /submission_data/test/pred/p',
          GOOD_SCORER,
        ].join('\n'),
      );
      const script = [
        'printf "label\\nalpha\\n" > /data/test/pred/p',
        'mkdir /data/train/pred/sub && echo label > /data/train/pred/sub/q',
        'echo weights > /data/model/weights',
        '',
      ].join('\n');
      const outcome = await runTask(world, env, learn(script, test));
      expect(outcome.report.status, outcome.report.error?.describe()).toBe('done');
      expect(outcome.logs).toContain('scorer ran');
      // The copies hold the files as regular files of the containers' user.
      const listed = outcome.logs.filter((line) => /^[-dl][rwx-]{9}/.test(line));
      expect(listed.length).toBeGreaterThanOrEqual(2);
      expect(listed.every((line) => /^[-d]/.test(line))).toBe(true);
      expect(await leftovers(outcome.report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    });
  },
);
