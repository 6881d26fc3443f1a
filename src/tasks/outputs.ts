import { type NotPlain, SizeBudget, sanitizeTar } from '../archive/safe-tar.js';
import { containerOwner } from '../config/owner.js';
import { formatSize } from '../config/size.js';
import { WorkerError } from '../errors.js';
import type { TaskEnv, TaskRun } from './context.js';

/**
 * What the submission leaves behind is read back under caps a person sets, and its
 * predictions reach the workflow (or storage) as regular files and folders only: a link
 * would let a trusted scorer read whatever it points to (the hidden targets) as predictions.
 */

/** One budget for all the prediction bytes a task reads back (--max-prediction-size). */
export function predictionBudget(env: TaskEnv): SizeBudget {
  return new SizeBudget(
    env.maxPredictionBytes,
    (at) =>
      new WorkerError(
        'OUTPUT_INVALID',
        `the submission's predictions are larger than the ${formatSize(env.maxPredictionBytes)} allowed by --max-prediction-size${at ? ` (at '${at}')` : ''}`,
        { hint: 'the operator can raise the cap with --max-prediction-size' },
      ),
  );
}

/** Cap of the model the submission leaves in /data/model (--max-model-size). */
export function leftModelBudget(env: TaskEnv): SizeBudget {
  return new SizeBudget(
    env.maxModelBytes,
    (at) =>
      new WorkerError(
        'OUTPUT_INVALID',
        `the model the submission left in /data/model is larger than the ${formatSize(env.maxModelBytes)} allowed by --max-model-size${at ? ` (at '${at}')` : ''}`,
        { hint: 'the operator can raise the cap with --max-model-size' },
      ),
  );
}

/**
 * Cap of a start model from storage, counted unpacked. It is the model an earlier run of the
 * submission left; it is not retried, since the same bytes come back every time.
 */
export function startModelBudget(env: TaskEnv, modelUuid: string): SizeBudget {
  return new SizeBudget(
    env.maxModelBytes,
    (at) =>
      new WorkerError(
        'ARCHIVE_REJECTED',
        `the model ${modelUuid} from storage unpacks to more than the ${formatSize(env.maxModelBytes)} allowed by --max-model-size${at ? ` (at '${at}')` : ''}; it was left by an earlier run of the submission, so the task cannot start from it`,
        { hint: 'the operator can raise the cap with --max-model-size' },
      ),
  );
}

/** Refuses a prediction that is not a regular file or a folder, naming it and its type. */
export function onlyPlainPredictions(folder: string): (entry: NotPlain) => WorkerError {
  return (entry) =>
    new WorkerError(
      'OUTPUT_INVALID',
      `the submission's prediction '${folder}/${entry.name}' is ${entry.kind}${entry.linkname ? ` (to '${entry.linkname}')` : ''}: predictions must be regular files and folders`,
      {
        hint: 'write each prediction as a regular file; links, FIFOs and devices are refused',
      },
    );
}

/**
 * Copies a prediction volume into a fresh one through the tar policy, streamed (export,
 * check, import): only regular files and folders, owned by the containers' user, within
 * the budget. The workflow's perf step mounts the copy, never the submission's volume.
 */
export async function copyPredictions(
  env: TaskEnv,
  run: TaskRun,
  from: string,
  to: string,
  options: { folder: string; budget: SizeBudget },
): Promise<void> {
  const checked = sanitizeTar(env.engine.exportVolume(from, run.signal), {
    gzip: false,
    ...containerOwner(env.limits.user),
    label: `prediction folder ${options.folder}`,
    budget: options.budget,
    plainOnly: onlyPlainPredictions(options.folder),
  });
  await env.engine.importVolume(to, checked, run.signal);
}
