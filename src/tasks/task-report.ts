import type { StepUsage } from '../clients/types.js';
import type { WorkerError } from '../errors.js';
import type { Performance } from '../schemas.js';
import type { StepName, StepTiming, TaskKind } from './context.js';

/** How one execution of one task ended. Never thrown: a failure is a value too. */
export interface TaskReport {
  status: 'done' | 'failed';
  kind: TaskKind;
  uuid: string;
  steps: StepTiming[];
  performance?: Performance;
  modelUuid?: string;
  predictionUuid?: string;
  /** The GPUs the submission was given, as index:UUID. */
  gpus?: string[];
  /** The step that was running when the task failed. */
  failedStep?: StepName;
  error?: WorkerError;
  /** What each container step that ran cost (SPEC.md section 7's usage.steps). */
  usage?: Partial<Record<StepName, StepUsage>>;
}
