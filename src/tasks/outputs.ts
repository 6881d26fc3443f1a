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

/**
 * The smaller of an output cap and --disk-limit. Counted unpacked, by each file's size: a
 * sparse file costs a step almost no disk, but every copy the worker makes of it (the
 * checked predictions, a model staged for the next task) is written whole. What a step
 * could not have written densely is refused where it is read back, as the task's own fault,
 * not found later as a full volume.
 */
export function outputCap(
  env: TaskEnv,
  capBytes: number,
  flag: string,
): { bytes: number; by: string } {
  const bytes = Math.min(capBytes, env.diskLimitBytes);
  const by = bytes < capBytes ? 'a container step may write (--disk-limit)' : `allowed by ${flag}`;
  return { bytes, by: `the ${formatSize(bytes)} ${by}` };
}

/** One budget for all the prediction bytes a task reads back (--max-prediction-size). */
export function predictionBudget(env: TaskEnv): SizeBudget {
  const cap = outputCap(env, env.maxPredictionBytes, '--max-prediction-size');
  return new SizeBudget(
    cap.bytes,
    (at) =>
      new WorkerError(
        'OUTPUT_INVALID',
        `the submission's predictions are larger than ${cap.by}${at ? ` (at '${at}')` : ''}, counting each file at its full size`,
        { hint: 'the operator can raise the cap with --max-prediction-size and --disk-limit' },
      ),
  );
}

/** Cap of the model the submission leaves in /data/model (--max-model-size). */
export function leftModelBudget(env: TaskEnv): SizeBudget {
  const cap = outputCap(env, env.maxModelBytes, '--max-model-size');
  return new SizeBudget(
    cap.bytes,
    (at) =>
      new WorkerError(
        'OUTPUT_INVALID',
        `the model the submission left in /data/model is larger than ${cap.by}${at ? ` (at '${at}')` : ''}, counting each file at its full size`,
        { hint: 'the operator can raise the cap with --max-model-size and --disk-limit' },
      ),
  );
}

/**
 * Cap of a start model from storage, counted unpacked. It is the model an earlier run of the
 * submission left; it is not retried, since the same bytes come back every time.
 */
export function startModelBudget(env: TaskEnv, modelUuid: string): SizeBudget {
  const cap = outputCap(env, env.maxModelBytes, '--max-model-size');
  return new SizeBudget(
    cap.bytes,
    (at) =>
      new WorkerError(
        'ARCHIVE_REJECTED',
        `the model ${modelUuid} from storage unpacks to more than ${cap.by}${at ? ` (at '${at}')` : ''}; it was left by an earlier run of the submission, so the task cannot start from it`,
        { hint: 'the operator can raise the cap with --max-model-size and --disk-limit' },
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
