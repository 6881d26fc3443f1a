import { describe, expect, it } from 'vitest';
import { WorkerError } from '../../src/errors.js';
import {
  ModelMetadataSchema,
  NIL_UUID,
  PerformanceSchema,
  parseTask,
  readableTaskUuid,
} from '../../src/schemas.js';

const id = (n: number) => `4b6f7c8e-1d2a-4c3b-8e4f-${String(n).padStart(12, '0')}`;

// As a real orchestrator sends it: nulls for unset fields and fields the worker does not use.
const learn = {
  uuid: id(1),
  problem: id(2),
  workflow: id(3),
  algo: id(4),
  train_data: [id(5), id(6)],
  test_data: [id(7)],
  model_start: null,
  model_end: id(8),
  rank: 0,
  worker: null,
  status: 'todo',
  perf: null,
  train_perf: null,
  test_perf: null,
  timestamp_creation: 1510000000,
  timestamp_done: null,
};

const predict = {
  uuid: id(11),
  problem: id(2),
  workflow: id(3),
  model: id(8),
  data: id(12),
  worker: null,
  status: 'todo',
  prediction_storage_uuid: null,
  timestamp_request: 1510000000,
  timestamp_done: null,
};

function failure(json: unknown, type?: 'learn' | 'predict'): WorkerError {
  try {
    parseTask(json, type);
  } catch (error) {
    expect(error).toBeInstanceOf(WorkerError);
    return error as WorkerError;
  }
  throw new Error('expected the task to be rejected');
}

describe('parseTask', () => {
  it('accepts a learn task with nulls and extra fields, and drops the extras', () => {
    const parsed = parseTask(learn);
    expect(parsed.type).toBe('learn');
    expect(parsed.task).toEqual({
      uuid: id(1),
      problem: id(2),
      workflow: id(3),
      algo: id(4),
      train_data: [id(5), id(6)],
      test_data: [id(7)],
      model_start: undefined,
      model_end: id(8),
      rank: 0,
      status: 'todo',
    });
  });

  it('accepts a predict task with nulls and extra fields', () => {
    const parsed = parseTask(predict);
    expect(parsed).toEqual({
      type: 'predict',
      task: {
        uuid: id(11),
        problem: id(2),
        workflow: id(3),
        model: id(8),
        data: id(12),
        status: 'todo',
      },
    });
  });

  it('accepts rank > 0 with a start model, and treats the nil UUID as unset', () => {
    const parsed = parseTask({ ...learn, rank: 2, model_start: id(9), problem: NIL_UUID });
    expect(parsed.type === 'learn' && parsed.task).toMatchObject({
      rank: 2,
      model_start: id(9),
      problem: undefined,
    });
  });

  it('honours an explicit type', () => {
    const error = failure(predict, 'learn');
    expect(error.message).toMatch(/^learn task field "algo": is required/);
    expect(() => parseTask(predict, 'learn')).toThrow(/"algo": is required/);
  });

  const broken: [string, Record<string, unknown>, RegExp][] = [
    [
      'rank > 0 without a start model',
      { rank: 1 },
      /task field "model_start": must be a non-nil UUID when rank > 0/,
    ],
    [
      'rank > 0 with the nil UUID as start model',
      { rank: 3, model_start: NIL_UUID },
      /"model_start": must be a non-nil UUID when rank > 0/,
    ],
    ['a negative rank', { rank: -1 }, /"rank": must be an integer >= 0/],
    ['a fractional rank', { rank: 1.5 }, /"rank": must be an integer >= 0/],
    ['a rank given as text', { rank: '1' }, /"rank": must be an integer >= 0/],
    ['an empty train_data', { train_data: [] }, /"train_data": must list at least one UUID/],
    [
      'train_data that is not a list',
      { train_data: id(5) },
      /"train_data": must be a list of UUIDs/,
    ],
    [
      'a nil UUID inside test_data',
      { test_data: [id(7), NIL_UUID] },
      /"test_data\[1\]": is required \(a non-nil UUID\)/,
    ],
    [
      'a malformed UUID in train_data',
      { train_data: ['abc'] },
      /"train_data\[0\]": must be a UUID/,
    ],
    ['a nil model_end', { model_end: NIL_UUID }, /"model_end": is required/],
    ['a null workflow', { workflow: null }, /"workflow": is required/],
    ['a numeric uuid', { uuid: 42 }, /"uuid": must be a UUID string/],
    [
      'an unknown status',
      { status: 'running' },
      /"status": must be one of todo, pending, done, failed/,
    ],
  ];
  for (const [what, change, message] of broken) {
    it(`rejects a learn task with ${what}, naming the field`, () => {
      const error = failure({ ...learn, ...change });
      expect(error.code).toBe('TASK_INVALID');
      expect(error.retryable).toBe(false);
      expect(error.message).toMatch(message);
    });
  }

  it('rejects a predict task without data, naming the field', () => {
    const error = failure({ ...predict, data: NIL_UUID }, 'predict');
    expect(error.message).toBe('predict task field "data": is required (a non-nil UUID)');
  });

  it('names every broken field at once', () => {
    const error = failure({ ...learn, algo: null, test_data: [] });
    expect(error.message).toContain('"algo"');
    expect(error.message).toContain('"test_data"');
  });

  it('refuses a message that is neither kind, or both, with a hint to give the type', () => {
    expect(failure({ uuid: id(1) }).message).toMatch(/neither a learn task .* nor a predict task/);
    const both = failure({ ...learn, model: id(1), data: id(2) });
    expect(both.message).toMatch(/both a learn task/);
    expect(both.hint).toMatch(/--type/);
    expect(failure([learn]).message).toBe('task must be a JSON object');
    expect(failure(null).message).toBe('task must be a JSON object');
  });
});

describe('readableTaskUuid', () => {
  it('reads the uuid of an invalid message so the failure can be reported', () => {
    expect(readableTaskUuid({ uuid: id(1), rank: -3 })).toBe(id(1));
  });
  it('gives nothing when there is no usable uuid', () => {
    expect(readableTaskUuid({ uuid: NIL_UUID })).toBeUndefined();
    expect(readableTaskUuid({ uuid: 'x' })).toBeUndefined();
    expect(readableTaskUuid('text')).toBeUndefined();
    expect(readableTaskUuid(null)).toBeUndefined();
  });
});

describe('PerformanceSchema', () => {
  it('accepts finite scores keyed by data UUID, ignoring extra fields', () => {
    const perf = {
      perf: 0.91,
      train_perf: { [id(5)]: 0.9 },
      test_perf: { [id(7)]: 0.8 },
      note: 'x',
    };
    expect(PerformanceSchema.parse(perf)).toEqual({
      perf: 0.91,
      train_perf: { [id(5)]: 0.9 },
      test_perf: { [id(7)]: 0.8 },
    });
  });
  it('rejects non-finite and missing numbers and non-UUID keys', () => {
    expect(
      PerformanceSchema.safeParse({ perf: Number.NaN, train_perf: {}, test_perf: {} }).success,
    ).toBe(false);
    expect(
      PerformanceSchema.safeParse({ perf: 1, train_perf: { [id(5)]: Infinity }, test_perf: {} })
        .success,
    ).toBe(false);
    expect(
      PerformanceSchema.safeParse({ perf: 1, train_perf: { x: 1 }, test_perf: {} }).success,
    ).toBe(false);
    expect(
      PerformanceSchema.safeParse({ perf: '0.9', train_perf: {}, test_perf: {} }).success,
    ).toBe(false);
    expect(PerformanceSchema.safeParse({ perf: 1, train_perf: {} }).success).toBe(false);
  });
});

describe('ModelMetadataSchema', () => {
  it('needs the algo that names the image', () => {
    expect(
      ModelMetadataSchema.parse({ uuid: id(8), algo: id(4), timestamp_upload: 1, x: 2 }),
    ).toEqual({
      uuid: id(8),
      algo: id(4),
      timestamp_upload: 1,
    });
    expect(ModelMetadataSchema.safeParse({ uuid: id(8), algo: null }).success).toBe(false);
  });
});
