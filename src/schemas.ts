import { z } from 'zod';
import { WorkerError } from './errors.js';

/**
 * Task messages, storage metadata and performance.json (SPEC.md sections 2, 3, 5).
 * Real orchestrators send null for unset fields and extra fields; both are accepted
 * and dropped. The nil UUID means "unset", as it did in the Go platform.
 */

export const NIL_UUID = '00000000-0000-0000-0000-000000000000';
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function isNil(value: unknown): boolean {
  return value === null || (typeof value === 'string' && value === NIL_UUID);
}

const uuidString = z
  .string({
    error: (issue) =>
      issue.input === undefined ? 'is required (a non-nil UUID)' : 'must be a UUID string',
  })
  .regex(UUID_PATTERN, { error: 'must be a UUID (8-4-4-4-12 hex digits)' });

/** A required UUID: missing, null and the nil UUID are all "not given". */
const requiredUuid = z.preprocess((v) => (isNil(v) ? undefined : v), uuidString);

/** An optional UUID: missing, null and the nil UUID all become undefined. */
const optionalUuid = z.preprocess((v) => (isNil(v) ? undefined : v), uuidString.optional());

/** An element of a list of UUIDs: the nil UUID is not a data set. */
const listUuid = z.preprocess((v) => (isNil(v) ? undefined : v), uuidString);

const uuidList = z
  .array(listUuid, { error: 'must be a list of UUIDs' })
  .min(1, { error: 'must list at least one UUID' });

const status = z
  .enum(['todo', 'pending', 'done', 'failed'], {
    error: 'must be one of todo, pending, done, failed',
  })
  .nullish()
  .transform((v) => v ?? undefined);

export const LearnTaskSchema = z
  .object({
    uuid: requiredUuid,
    problem: optionalUuid,
    workflow: requiredUuid,
    algo: requiredUuid,
    train_data: uuidList,
    test_data: uuidList,
    model_start: optionalUuid,
    model_end: requiredUuid,
    rank: z
      .number({ error: 'must be an integer >= 0' })
      .int({ error: 'must be an integer >= 0' })
      .min(0, { error: 'must be an integer >= 0' })
      .nullish()
      .transform((v) => v ?? 0),
    status,
  })
  .superRefine((task, ctx) => {
    // Storage finds a UUID whatever its case: two spellings of one data set are one set.
    const once = (field: 'train_data' | 'test_data') => {
      const seen = new Set<string>();
      task[field].forEach((uuid, index) => {
        const key = uuid.toLowerCase();
        if (seen.has(key)) {
          ctx.addIssue({
            code: 'custom',
            path: [field, index],
            message: `lists data set ${uuid} more than once`,
          });
        }
        seen.add(key);
      });
      return seen;
    };
    once('train_data');
    const test = once('test_data');
    // A test set also staged as train data would hand the submission its labelled targets.
    task.train_data.forEach((uuid, index) => {
      if (test.has(uuid.toLowerCase())) {
        ctx.addIssue({
          code: 'custom',
          path: ['train_data', index],
          message: `data set ${uuid} is also in test_data: train and test sets must be disjoint`,
        });
      }
    });
    if (task.rank > 0 && task.model_start === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['model_start'],
        message: 'must be a non-nil UUID when rank > 0',
      });
    }
  });

export const PredictTaskSchema = z.object({
  uuid: requiredUuid,
  problem: optionalUuid,
  workflow: optionalUuid,
  model: requiredUuid,
  data: requiredUuid,
  status,
});

/** `GET /model/<uuid>`: only the algo matters to the worker (it names the submission's image). */
export const ModelMetadataSchema = z.object({
  uuid: requiredUuid,
  algo: requiredUuid,
  timestamp_upload: z.number().nullish(),
});

const finite = z.number({ error: 'must be a finite number' }).finite({
  error: 'must be a finite number',
});
const scoresByUuid = z.record(
  z.string().regex(UUID_PATTERN, { error: 'keys must be data UUIDs' }),
  finite,
  { error: 'must be an object of data UUID -> number' },
);

export const PerformanceSchema = z.object({
  perf: finite,
  train_perf: scoresByUuid,
  test_perf: scoresByUuid,
});

export type LearnTask = z.infer<typeof LearnTaskSchema>;
export type PredictTask = z.infer<typeof PredictTaskSchema>;
export type ModelMetadata = z.infer<typeof ModelMetadataSchema>;
export type Performance = z.infer<typeof PerformanceSchema>;

export type ParsedTask =
  | { type: 'learn'; task: LearnTask }
  | { type: 'predict'; task: PredictTask };

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    out += typeof key === 'number' ? `[${key}]` : out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

/**
 * Every problem, each naming the field and the rule, e.g.
 * `task field "model_start": must be a non-nil UUID when rank > 0`.
 */
export function describeIssues(error: z.ZodError, subject: string): string {
  return error.issues
    .map((issue) => {
      const path = formatPath(issue.path);
      return path === ''
        ? `${subject}: ${issue.message}`
        : `${subject} field "${path}": ${issue.message}`;
    })
    .join('; ');
}

function isObject(json: unknown): json is Record<string, unknown> {
  return typeof json === 'object' && json !== null && !Array.isArray(json);
}

function present(obj: Record<string, unknown>, key: string): boolean {
  return obj[key] !== undefined && obj[key] !== null;
}

function guessType(obj: Record<string, unknown>): 'learn' | 'predict' {
  const learn = ['train_data', 'model_end', 'algo'].some((k) => present(obj, k));
  const predict = present(obj, 'model') && present(obj, 'data');
  if (learn && !predict) return 'learn';
  if (predict && !learn) return 'predict';
  throw new WorkerError(
    'TASK_INVALID',
    learn
      ? 'task has fields of both a learn task (train_data, model_end, algo) and a predict task (model, data)'
      : 'task is neither a learn task (train_data, model_end, algo) nor a predict task (model and data)',
    { hint: 'give the task type explicitly (--type learn or --type predict)' },
  );
}

/** Validates a task message; learn and predict are told apart by their fields unless `type` is given. */
export function parseTask(json: unknown, type?: 'learn' | 'predict'): ParsedTask {
  if (!isObject(json)) {
    throw new WorkerError('TASK_INVALID', 'task must be a JSON object');
  }
  const kind = type ?? guessType(json);
  const result =
    kind === 'learn' ? LearnTaskSchema.safeParse(json) : PredictTaskSchema.safeParse(json);
  if (!result.success) {
    throw new WorkerError('TASK_INVALID', `${kind} ${describeIssues(result.error, 'task')}`);
  }
  return kind === 'learn'
    ? { type: 'learn', task: result.data as LearnTask }
    : { type: 'predict', task: result.data as PredictTask };
}

/** The kind of task a message's fields say it is; undefined when they say neither or both. */
export function taskKindOf(json: unknown): 'learn' | 'predict' | undefined {
  if (!isObject(json)) return undefined;
  try {
    return guessType(json);
  } catch {
    return undefined;
  }
}

/** The uuid of a message that failed validation, when it can be read, so the failure can be reported. */
export function readableTaskUuid(json: unknown): string | undefined {
  if (!isObject(json)) return undefined;
  const uuid = json.uuid;
  return typeof uuid === 'string' && UUID_PATTERN.test(uuid) && uuid !== NIL_UUID
    ? uuid
    : undefined;
}
