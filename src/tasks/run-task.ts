import type { FailedReport } from '../clients/types.js';
import { toWorkerError, WorkerError } from '../errors.js';
import type { Logger } from '../log.js';
import type { LearnTask, PredictTask } from '../schemas.js';
import type { TaskEnv, TaskRun } from './context.js';
import { gpuNames } from './gpus.js';
import { runLearn } from './learn.js';
import type { Fault } from './outcome.js';
import { runPredict } from './predict.js';
import { failedReport } from './report-body.js';
import { withTaskScope } from './scope.js';
import { StepRecorder } from './steps.js';
import type { TaskReport } from './task-report.js';

export type { TaskReport } from './task-report.js';

export type ParsedTask =
  | { type: 'learn'; task: LearnTask }
  | { type: 'predict'; task: PredictTask };

/** Runs a learn or predict task to its end, removing everything it created. */
export async function executeTask(
  env: TaskEnv,
  given: TaskRun,
  parsed: ParsedTask,
  log: Logger,
): Promise<TaskReport> {
  const run: TaskRun = { ...given, usage: {} };
  const usage = run.usage as TaskReport['usage'];
  const steps = new StepRecorder(run);
  const gpus = gpuNames(run.gpus);
  const base = {
    kind: parsed.type,
    uuid: parsed.task.uuid,
    steps: steps.timings,
    ...(gpus ? { gpus } : {}),
    usage,
  };
  try {
    return await withTaskScope(env, parsed.task.uuid, log, async (scope) => {
      if (parsed.type === 'learn') {
        const result = await runLearn(env, run, parsed.task, scope, steps);
        return {
          ...base,
          status: 'done' as const,
          performance: result.performance,
          modelUuid: parsed.task.model_end,
        };
      }
      const result = await runPredict(env, run, parsed.task, scope, steps);
      return { ...base, status: 'done' as const, predictionUuid: result.predictionUuid };
    });
  } catch (error) {
    return {
      ...base,
      status: 'failed',
      failedStep: steps.stepOf(error),
      error: toWorkerError(error),
    };
  }
}

/**
 * Tells the orchestrator a task failed (the body from failedReportOf). Returns the
 * reporting error, if any, instead of throwing.
 */
export async function reportFailure(
  env: TaskEnv,
  report: TaskReport,
  failure: FailedReport,
  signal?: AbortSignal,
): Promise<WorkerError | undefined> {
  try {
    await env.orchestrator.reportFailed(report.kind, report.uuid, failure, signal);
    return undefined;
  } catch (error) {
    return toWorkerError(error, 'ORCHESTRATOR_FAILED');
  }
}

/**
 * What a failed report says, as SPEC.md section 7 has it: why, whose fault it was, after
 * how many attempts, and what the task cost.
 */
export function failedReportOf(
  env: TaskEnv,
  report: TaskReport,
  decision: { fault: Fault; reason: string },
  attempts: number,
): FailedReport {
  return failedReport(env, {
    error: report.error ?? new WorkerError('INTERNAL', 'the task failed without a reason'),
    fault: decision.fault,
    reason: decision.reason,
    step: report.failedStep,
    attempts,
    usage: report.usage,
  });
}
