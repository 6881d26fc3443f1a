import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { extractEntryToFile } from '../archive/safe-tar.js';
import { WorkerError } from '../errors.js';
import type { PredictTask } from '../schemas.js';
import { runContainerStep } from './containers.js';
import type { TaskEnv, TaskRun } from './context.js';
import { stageDataSet, stagedNote } from './data-sets.js';
import { buildImages } from './images.js';
import { onlyPlainPredictions, predictionBudget } from './outputs.js';
import { taskUsage } from './report-body.js';
import type { TaskScope } from './scope.js';
import { stageModel } from './staging.js';
import type { StepRecorder } from './steps.js';
import { createVolumes, createWritableVolumes, settleAll } from './volumes.js';

export interface PredictResult {
  predictionUuid: string;
  predictionBytes: number;
}

/** SPEC section 5, predict task, in order. */
export async function runPredict(
  env: TaskEnv,
  run: TaskRun,
  task: PredictTask,
  scope: TaskScope,
  steps: StepRecorder,
): Promise<PredictResult> {
  // The model's metadata names the algo whose build context gives the image; the data
  // and the model are staged while it builds.
  const [images, v] = await settleAll([
    env.storage
      .getModelMetadata(task.model, run.signal)
      .then((model) => buildImages(env, run, steps, { submission: model.algo }, scope)),
    stagePredict(env, run, task, scope, steps),
  ]);

  await steps.step('predict', () =>
    runContainerStep(env, run, {
      labels: scope.labels,
      disks: scope.disks,
      idMaps: scope.idMaps,
      step: 'predict',
      owner: 'submission',
      image: images.submission,
      command: ['-V', '/data', '-T', 'predict'],
      mounts: [
        {
          volume: v.test.volume,
          target: '/data/test',
          readOnly: true,
          ...(v.test.shared ? { shared: true } : {}),
        },
        { volume: v.testPred, target: '/data/test/pred' },
        { volume: v.model, target: '/data/model', readOnly: true },
      ],
      timeoutMs: env.predictTimeoutMs,
    }),
  );

  const predictionUuid = randomUUID();
  const predictionBytes = await steps.step(
    'upload',
    async () => {
      const file = join(scope.tmp, 'prediction');
      // The prediction goes to storage as a regular file read under the cap, as in learn.
      const found = await extractEntryToFile(
        env.engine.exportVolume(v.testPred, run.signal),
        [task.data, `pred_${task.data}`],
        file,
        {
          label: 'prediction folder /data/test/pred',
          budget: predictionBudget(env),
          plainOnly: onlyPlainPredictions('/data/test/pred'),
        },
      );
      if (!found) {
        throw new WorkerError(
          'PREDICTION_MISSING',
          `the submission's predict step wrote no /data/test/pred/${task.data} (nor pred_${task.data})`,
        );
      }
      await env.storage.uploadPrediction(predictionUuid, file, run.signal);
      return found.size;
    },
    (size) => `prediction ${predictionUuid}, ${size} bytes`,
  );

  await steps.step('report', () =>
    env.orchestrator.predDone(
      task.uuid,
      predictionUuid,
      taskUsage(env, run.usage ?? {}),
      run.signal,
    ),
  );
  return { predictionUuid, predictionBytes };
}

async function stagePredict(
  env: TaskEnv,
  run: TaskRun,
  task: PredictTask,
  scope: TaskScope,
  steps: StepRecorder,
) {
  const [staged, written] = await settleAll([
    createVolumes(env, scope.labels, ['model'] as const),
    createWritableVolumes(env, scope, 'predict', ['testPred'] as const),
  ]);
  const v = { ...staged, ...written };
  const data = await steps.step(
    'stage',
    async () => {
      const [test, model] = await settleAll([
        stageDataSet(env, run, scope, 'test', { uuids: [task.data], dirs: ['pred'] }),
        stageModel(env, run, v.model, task.model),
      ]);
      return { test, bytes: test.fetched + model };
    },
    (staged) => stagedNote(staged.bytes, { test: staged.test }),
  );
  return { ...v, test: data.test };
}
