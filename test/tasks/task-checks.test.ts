import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTask } from '../../src/schemas.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  doneReports,
  leftovers,
  newIds,
  podmanMissing,
  runTask,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

// The task message is untrusted: what it lists must not hand the submission the hidden
// targets or another participant's model.

const learn = (fields: Record<string, unknown>) => ({
  ...newIds('uuid', 'workflow', 'algo', 'model_end'),
  train_data: [randomUUID()],
  test_data: [randomUUID()],
  ...fields,
});

const refusal = (json: unknown) => {
  try {
    parseTask(json, 'learn');
  } catch (error) {
    return error as { code: string; message: string };
  }
  throw new Error('the task was accepted');
};

describe('task checks of the message', () => {
  it('refuses a learn task whose train_data lists one of its test sets, in any case', () => {
    const test = randomUUID();
    const error = refusal(
      learn({ train_data: [randomUUID(), test.toUpperCase()], test_data: [test] }),
    );
    expect(error.code).toBe('TASK_INVALID');
    expect(error.message).toContain('field "train_data[1]"');
    expect(error.message).toContain('disjoint');
  });

  it('refuses a data set listed twice, in train_data or test_data', () => {
    const twice = randomUUID();
    expect(refusal(learn({ train_data: [twice, twice] })).message).toContain(
      `field "train_data[1]": lists data set ${twice} more than once`,
    );
    expect(refusal(learn({ test_data: [twice, twice.toUpperCase()] })).message).toContain(
      'field "test_data[1]"',
    );
  });

  it('accepts distinct, disjoint sets', () => {
    expect(parseTask(learn({ train_data: [randomUUID(), randomUUID()] }), 'learn').type).toBe(
      'learn',
    );
  });
});

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'the start model of a rank > 0 task',
  { timeout: 120_000 },
  () => {
    let world: TaskWorld;
    beforeAll(async () => {
      world = await startWorld();
    });
    afterAll(() => world?.close());

    it('is refused when storage says another algo trained it, before anything is fetched or built', async () => {
      const ids = newIds('W', 'A', 'other', 'start', 'train', 'test');
      world.storage.seed('model', ids.start, {
        blob: Buffer.from('not read'),
        meta: { uuid: ids.start, algo: ids.other },
      });
      const env = await world.env();
      const json = learn({
        workflow: ids.W,
        algo: ids.A,
        train_data: [ids.train],
        test_data: [ids.test],
        rank: 1,
        model_start: ids.start,
      });
      const { report } = await runTask(world, env, json);
      expect(report.status).toBe('failed');
      expect(report.error?.code).toBe('TASK_INVALID');
      expect(report.error?.message).toContain('"model_start"');
      expect(report.error?.message).not.toContain(ids.other);
      // Only the model's metadata was asked: no blob, no build context.
      const asked = world.storage.requests.map((r) => r.path);
      expect(asked.filter((p) => p.includes(ids.start) || p.includes(ids.A))).toEqual([
        `/model/${ids.start}`,
      ]);
      expect(asked.some((p) => p.endsWith('/blob'))).toBe(false);
      expect(doneReports(world, json.uuid as string)).toHaveLength(1);
      expect(await leftovers(json.uuid as string, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    });
  },
);
