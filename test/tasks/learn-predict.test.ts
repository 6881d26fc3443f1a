import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireEngines } from '../support/engine-variants.js';
import {
  doneReports,
  exampleContext,
  exampleData,
  LEARN_STEPS,
  leftovers,
  newIds,
  podmanMissing,
  readTarGz,
  runTask,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

// Learn (rank 0, then rank 1 from the model it made) and predict, end to end: the
// example problem and submission built from their packed contexts, data staged from
// the storage stand-in, reports checked at the orchestrator stand-in.

const CLASSES = ['alpha', 'beta', 'gamma'];

function rows(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

/** class -> row count, from the example submission's model.csv (class,count,sums...). */
function modelCounts(modelCsv: string): Record<string, number> {
  return Object.fromEntries(
    rows(modelCsv)
      .slice(1)
      .map((row) => {
        const [name, count] = row.split(',');
        return [name, Number(count)];
      }),
  );
}

const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);

describe
  .skipIf(podmanMissing !== undefined && !requireEngines)
  .concurrent('learn and predict tasks', { timeout: 300_000 }, () => {
    let world: TaskWorld;
    const ids = newIds('workflow', 'algo', 'train1', 'train2', 'test', 'predictData');
    let trainRows = 0;

    beforeAll(async () => {
      world = await startWorld();
      const [problem, submission] = await Promise.all([
        exampleContext('problem'),
        exampleContext('submission'),
      ]);
      world.storage.seed('problem', ids.workflow, { blob: problem });
      world.storage.seed('algo', ids.algo, { blob: submission });
      const files = {
        train1: 'train-1.csv',
        train2: 'train-2.csv',
        test: 'test.csv',
        predictData: 'predict.csv',
      } as const;
      for (const [id, file] of Object.entries(files)) {
        world.storage.seed('data', ids[id as keyof typeof files], {
          blob: await exampleData(file),
        });
      }
      trainRows =
        rows((await exampleData('train-1.csv')).toString()).length -
        1 +
        rows((await exampleData('train-2.csv')).toString()).length -
        1;
    });

    afterAll(() => world?.close());

    function learnTask(fields: { model_end: string; rank?: number; model_start?: string }) {
      return {
        ...newIds('uuid'),
        problem: ids.workflow,
        workflow: ids.workflow,
        algo: ids.algo,
        train_data: [ids.train1, ids.train2],
        test_data: [ids.test],
        model_start: null,
        rank: 0,
        worker: null,
        status: 'todo',
        timestamp_creation: 1510000000,
        ...fields,
      };
    }

    async function uploadedModel(uuid: string) {
      const upload = world.storage.requests.find(
        (r) => r.method === 'POST' && r.path.startsWith('/model?') && r.path.includes(uuid),
      );
      expect(upload?.status).toBe(201);
      expect(upload?.headers['content-length']).toMatch(/^\d+$/);
      const query = new URL(upload?.path ?? '', 'http://x').searchParams;
      const blob = world.storage.blob('model', uuid);
      expect(blob).toBeDefined();
      expect(Number(upload?.headers['content-length'])).toBe(blob?.length);
      return { query, entries: await readTarGz(blob as Buffer) };
    }

    it('learns from rank 0, then continues from its model at rank 1 and predicts with it', async () => {
      // rank 0
      const first = learnTask(newIds('model_end'));
      const env = await world.env();
      const learned = await runTask(world, env, first);
      expect(learned.report.error?.describe()).toBeUndefined();
      expect(learned.report.status).toBe('done');
      expect(learned.report.steps.map((s) => s.step)).toEqual(LEARN_STEPS);

      const [done] = doneReports(world, first.uuid);
      expect(done?.path).toBe(`/learndone/${first.uuid}`);
      expect(done?.status).toBe(200);
      const body = done?.body as Record<string, unknown>;
      expect(body.status).toBe('done');
      expect(body.perf).toBeGreaterThan(0.7);
      expect(Object.keys(body.train_perf as object).sort()).toEqual(
        [ids.train1, ids.train2].sort(),
      );
      expect(Object.keys(body.test_perf as object)).toEqual([ids.test]);
      expect(learned.report.performance?.perf).toBe(body.perf);

      const model = await uploadedModel(first.model_end);
      expect(model.query.get('uuid')).toBe(first.model_end);
      expect(model.query.get('algo')).toBe(ids.algo);
      for (const entry of model.entries) {
        expect(entry.name.split('/')).not.toContain('..');
        expect(entry.name.startsWith('/')).toBe(false);
        expect([entry.uid, entry.gid]).toEqual([0, 0]);
      }
      const csv = model.entries.find((e) => e.name.replace(/^\.\//, '') === 'model.csv');
      expect(csv).toBeDefined();
      const counts0 = modelCounts(csv?.content ?? '');
      expect(Object.keys(counts0)).toEqual(CLASSES);
      expect(sum(counts0)).toBe(trainRows);
      expect(await leftovers(first.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });

      // rank 1 from that model, and a prediction with it, at once.
      const second = learnTask({ ...newIds('model_end'), rank: 1, model_start: first.model_end });
      const predict = {
        ...newIds('uuid'),
        problem: ids.workflow,
        workflow: ids.workflow,
        model: first.model_end,
        data: ids.predictData,
        worker: null,
        status: 'todo',
        prediction_storage_uuid: null,
      };
      const [continued, predicted] = await Promise.all([
        runTask(world, env, second),
        runTask(world, env, predict),
      ]);

      // The submission continued from the start model, so every count grew.
      expect(continued.report.error?.describe()).toBeUndefined();
      expect(continued.report.status).toBe('done');
      expect(continued.logs.join('\n')).toContain('continuing training from the saved model');
      const model1 = await uploadedModel(second.model_end);
      const csv1 = model1.entries.find((e) => e.name.replace(/^\.\//, '') === 'model.csv');
      const counts1 = modelCounts(csv1?.content ?? '');
      for (const name of CLASSES) expect(counts1[name]).toBe(2 * (counts0[name] ?? 0));
      expect(doneReports(world, second.uuid)[0]?.body).toMatchObject({ status: 'done' });

      // The prediction: the model's metadata named the algo whose image predicted.
      expect(predicted.report.error?.describe()).toBeUndefined();
      expect(predicted.report.status).toBe('done');
      expect(world.storage.requests.map((r) => `${r.method} ${r.path}`)).toContain(
        `GET /model/${first.model_end}`,
      );
      expect(world.storage.requests.map((r) => `${r.method} ${r.path}`)).toContain(
        `GET /algo/${ids.algo}/blob`,
      );
      const upload = world.storage.requests.find(
        (r) =>
          r.path === '/prediction' &&
          (r.body as { uuid?: string } | undefined)?.uuid === predicted.report.predictionUuid,
      );
      const fields = upload?.body as { fields: string[]; uuid: string; size: string };
      expect(upload?.status).toBe(201);
      expect(fields.fields).toEqual(['uuid', 'size', 'blob']);
      expect(fields.uuid).toBe(predicted.report.predictionUuid);
      const [predDone] = doneReports(world, predict.uuid);
      expect(predDone?.path).toBe(`/preddone/${predict.uuid}`);
      expect(predDone?.body).toEqual({
        status: 'done',
        prediction_storage_uuid: predicted.report.predictionUuid,
        usage: {
          worker: env.workerId,
          host: hostname(),
          steps: { predict: expect.objectContaining({ wall_s: expect.any(Number) }) },
        },
      });
      const prediction = rows(
        world.storage.blob('prediction', fields.uuid)?.toString('utf8') ?? '',
      );
      const inputRows = rows((await exampleData('predict.csv')).toString()).length - 1;
      expect(prediction[0]).toBe('label');
      expect(prediction.slice(1)).toHaveLength(inputRows);
      for (const label of prediction.slice(1)) expect(CLASSES).toContain(label);
      expect(await leftovers(predict.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    });

    it('runs two learn tasks of the same algo at once, each with its own data and model', async () => {
      const env = await world.env();
      const one = { ...learnTask(newIds('model_end')), train_data: [ids.train1] };
      const two = { ...learnTask(newIds('model_end')), train_data: [ids.train2] };
      const [a, b] = await Promise.all([runTask(world, env, one), runTask(world, env, two)]);
      expect([a.report.status, b.report.status]).toEqual(['done', 'done']);
      expect(Object.keys(a.report.performance?.train_perf ?? {})).toEqual([ids.train1]);
      expect(Object.keys(b.report.performance?.train_perf ?? {})).toEqual([ids.train2]);
      for (const [task, file] of [
        [one, 'train-1.csv'],
        [two, 'train-2.csv'],
      ] as const) {
        const { entries } = await uploadedModel(task.model_end);
        const csv = entries.find((e) => e.name.replace(/^\.\//, '') === 'model.csv');
        expect(sum(modelCounts(csv?.content ?? ''))).toBe(
          rows((await exampleData(file)).toString()).length - 1,
        );
        expect(doneReports(world, task.uuid)[0]?.body).toMatchObject({ status: 'done' });
        expect(await leftovers(task.uuid, env.tmpDir)).toEqual({
          containers: [],
          volumes: [],
          tmp: [],
        });
      }
    });
  });
