import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { packFolderFromTar, readFileFromTar } from '../archive/safe-tar.js';
import type { VolumeMount } from '../engine/types.js';
import { WorkerError } from '../errors.js';
import { type LearnTask, type Performance, PerformanceSchema } from '../schemas.js';
import { type ContainerStep, type PreparedSteps, prepareContainerSteps } from './containers.js';
import type { StepName, TaskEnv, TaskRun } from './context.js';
import { type DataVolume, stageDataSet, stagedNote } from './data-sets.js';
import { buildImages } from './images.js';
import { copyPredictions, leftModelBudget, predictionBudget } from './outputs.js';
import { taskUsage } from './report-body.js';
import type { TaskScope } from './scope.js';
import { prepareEmpty, stageModel } from './staging.js';
import type { StepRecorder } from './steps.js';
import { createVolumes, createWritableVolumes, settleAll } from './volumes.js';

const PERFORMANCE_MAX_BYTES = 1024 * 1024;

/**
 * A task continues only from a model of its own algo: the message is untrusted, and a start
 * model of another algo would hand this submission another participant's model. Asked of
 * storage before anything is fetched or built.
 */
async function checkStartModel(
  env: TaskEnv,
  run: TaskRun,
  algo: string,
  modelStart: string,
): Promise<void> {
  const model = await env.storage.getModelMetadata(modelStart, run.signal);
  if (model.algo.toLowerCase() !== algo.toLowerCase()) {
    throw new WorkerError(
      'TASK_INVALID',
      `learn task field "model_start": model ${modelStart} was not trained by this task's algo ${algo}`,
      { hint: 'a task may continue only from a model of its own algo' },
    );
  }
}

/** A data set, read-only wherever it is mounted; a cached one is shared with other tasks. */
function dataMount(set: DataVolume, target: string): VolumeMount {
  return { volume: set.volume, target, readOnly: true, ...(set.shared ? { shared: true } : {}) };
}

export interface LearnResult {
  performance: Performance;
  modelBytes: number;
}

/**
 * SPEC section 5, learn task, in order. The submission never has the hidden test
 * folder mounted, and sees its inputs read-only: it writes only its predictions
 * and its model.
 */
export async function runLearn(
  env: TaskEnv,
  run: TaskRun,
  task: LearnTask,
  scope: TaskScope,
  steps: StepRecorder,
): Promise<LearnResult> {
  if (task.rank > 0 && task.model_start) {
    const start = task.model_start;
    await steps.step('stage', () => checkStartModel(env, run, task.algo, start));
  }
  // The images build while the data is staged: both are needed before the first container.
  const [images, v] = await settleAll([
    buildImages(env, run, steps, { workflow: task.workflow, submission: task.algo }, scope),
    stageLearn(env, run, task, scope, steps),
  ]);

  const common = { labels: scope.labels, disks: scope.disks, idMaps: scope.idMaps };
  const workflowStep = (step: 'detarget' | 'perf', mounts: VolumeMount[]): ContainerStep => ({
    ...common,
    step,
    owner: 'workflow',
    image: images.workflow,
    command: ['-T', step, '-i', '/hidden_data', '-s', '/submission_data'],
    mounts,
    timeoutMs: env.workflowTimeoutMs,
  });
  const containerSteps: ContainerStep[] = [
    workflowStep('detarget', [
      dataMount(v.hiddenTest, '/hidden_data/test'),
      { volume: v.test, target: '/submission_data/test' },
    ]),
    {
      ...common,
      step: 'train',
      owner: 'submission',
      image: images.submission,
      command: ['-V', '/data', '-T', 'train'],
      mounts: [
        dataMount(v.train, '/data/train'),
        { volume: v.trainPred, target: '/data/train/pred' },
        { volume: v.test, target: '/data/test', readOnly: true },
        { volume: v.testPred, target: '/data/test/pred' },
        { volume: v.model, target: '/data/model' },
      ],
      timeoutMs: env.learnTimeoutMs,
    },
    workflowStep('perf', [
      dataMount(v.hiddenTest, '/hidden_data/test'),
      { volume: v.perf, target: '/hidden_data/perf' },
      dataMount(v.train, '/submission_data/train'),
      { volume: v.trainPredChecked, target: '/submission_data/train/pred', readOnly: true },
      { volume: v.test, target: '/submission_data/test', readOnly: true },
      { volume: v.testPredChecked, target: '/submission_data/test/pred', readOnly: true },
    ]),
  ];
  // The three containers are created, and their volumes checked, before detarget starts;
  // the checked predictions are copied into perf's volumes after that, before it starts.
  let prepared: PreparedSteps | undefined;
  const runStep = (step: StepName) => (prepared as PreparedSteps).run(step);
  try {
    return await runSteps();
  } finally {
    await prepared?.discard();
  }

  async function runSteps(): Promise<LearnResult> {
    await steps.step('detarget', async () => {
      prepared = await prepareContainerSteps(env, run, containerSteps);
      return runStep('detarget');
    });

    await steps.step('train', () => runStep('train'));

    // The model is read back while the workflow scores; a failure of perf is reported first.
    const modelFile = join(scope.tmp, 'model.tar.gz');
    const stopPacking = new AbortController();
    const packSignal = AbortSignal.any([run.signal, stopPacking.signal]);
    const packing = pipeline(
      packFolderFromTar(env.engine.exportVolume(v.model, packSignal), {
        budget: leftModelBudget(env),
      }),
      createWriteStream(modelFile, { mode: 0o600 }),
      { signal: packSignal },
    );
    packing.catch(() => undefined);

    // performance.json is read inside the step, so a missing or invalid one fails "perf".
    // The workflow scores checked copies of the predictions, never the submission's volumes.
    const performance = await steps
      .step(
        'perf',
        async () => {
          const budget = predictionBudget(env);
          await settleAll([
            copyPredictions(env, run, v.trainPred, v.trainPredChecked, {
              folder: '/data/train/pred',
              budget,
            }),
            copyPredictions(env, run, v.testPred, v.testPredChecked, {
              folder: '/data/test/pred',
              budget,
            }),
          ]);
          await runStep('perf');
          return readPerformance(env, run, v.perf);
        },
        (p) => `performance ${p.perf}`,
      )
      .catch(async (error: unknown) => {
        stopPacking.abort();
        await packing.catch(() => undefined);
        throw error;
      });

    const modelBytes = await steps.step(
      'upload',
      async () => {
        await packing;
        const { size } = await stat(modelFile);
        await env.storage.uploadModel(
          task.model_end,
          task.algo,
          createReadStream(modelFile),
          size,
          run.signal,
        );
        return size;
      },
      (size) => `model ${task.model_end}, ${size} bytes`,
    );

    await steps.step('report', () =>
      env.orchestrator.learnDone(
        task.uuid,
        {
          perf: performance.perf,
          train_perf: performance.train_perf,
          test_perf: performance.test_perf,
        },
        taskUsage(env, run.usage ?? {}),
        run.signal,
      ),
    );
    return { performance, modelBytes };
  }
}

/**
 * Creates the task's volumes and stages the data into them, each volume as soon as it
 * exists: the data goes into the worker's own volumes while the writable ones get their
 * sized filesystems.
 */
async function stageLearn(
  env: TaskEnv,
  run: TaskRun,
  task: LearnTask,
  scope: TaskScope,
  steps: StepRecorder,
) {
  // The worker fills these itself, each bounded by its own cap.
  const checked = createVolumes(env, scope.labels, [
    'trainPredChecked',
    'testPredChecked',
  ] as const);
  // What the containers write, one filesystem of --disk-limit per writing step.
  const detarget = createWritableVolumes(env, scope, 'detarget', ['test'] as const);
  const train = createWritableVolumes(env, scope, 'train', [
    'trainPred',
    'testPred',
    'model',
  ] as const);
  const perf = createWritableVolumes(env, scope, 'perf', ['perf'] as const);
  // Every creation settles before a failure goes on: the task's cleanup must see them all.
  const created = settleAll([checked, detarget, train, perf]);
  const start = task.model_start;
  const [[fromWorker, forDetarget, forTrain, forPerf], data] = await settleAll([
    created,
    steps.step(
      'stage',
      async () => {
        // The data sets go to volumes of their own (the task's, or the host's data cache).
        const [trainSet, hiddenTest, modelBytes] = await settleAll([
          stageDataSet(env, run, scope, 'train', { uuids: task.train_data, dirs: ['pred'] }),
          stageDataSet(env, run, scope, 'hiddenTest', { uuids: task.test_data, dirs: [] }),
          task.rank > 0 && start
            ? train.then((v) =>
                stageModel(env, run, v.model, start, { sized: scope.disks.has(v.model) }),
              )
            : Promise.resolve(0),
          // The submission's test folder holds the mount point of its predictions. The other
          // volumes stay empty: a new volume is writable by the containers' user as it is.
          detarget.then((v) => prepareEmpty(env, run, v.test, ['pred'])),
        ]);
        const sets = { train: trainSet, hiddenTest };
        return { sets, bytes: trainSet.fetched + hiddenTest.fetched + modelBytes };
      },
      (staged) => stagedNote(staged.bytes, staged.sets),
    ),
  ]);
  return { ...fromWorker, ...forDetarget, ...forTrain, ...forPerf, ...data.sets };
}

async function readPerformance(env: TaskEnv, run: TaskRun, volume: string): Promise<Performance> {
  const raw = await readFileFromTar(
    env.engine.exportVolume(volume, run.signal),
    'performance.json',
    PERFORMANCE_MAX_BYTES,
  );
  if (!raw) {
    throw new WorkerError(
      'PERFORMANCE_INVALID',
      "the workflow's perf step wrote no /hidden_data/perf/performance.json",
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch (error) {
    throw new WorkerError(
      'PERFORMANCE_INVALID',
      `performance.json is not valid JSON: ${(error as Error).message}`,
    );
  }
  const parsed = PerformanceSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? `field "${issue.path.join('.')}"` : 'its top level';
    throw new WorkerError(
      'PERFORMANCE_INVALID',
      `performance.json is invalid at ${where}: ${issue?.message}`,
      {
        hint: 'expected {"perf": number, "train_perf": {uuid: number}, "test_perf": {uuid: number}}',
      },
    );
  }
  return parsed.data;
}
