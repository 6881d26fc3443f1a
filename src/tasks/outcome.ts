import { type ErrorCode, WorkerError } from '../errors.js';
import type { TaskReport } from './task-report.js';

/**
 * Decides how a task ends, for the daemon and for `task exec` alike. Only the task's own
 * fault is a permanent failure; anything else (the worker, its host, a service) leaves
 * the task as good as it was, so it is tried again, and reported failed only when
 * attempts run out, with a reason that says whose fault it was.
 */

export type Fault = 'task' | 'worker';

/**
 * The task's own fault: trying again cannot help, the submission, the workflow or the
 * task itself has to change. Every other code is the worker's or its host's fault.
 */
export const TASK_FAULT_CODES: ReadonlySet<string> = new Set<
  ErrorCode | 'DISK_LIMIT' | 'OUTPUT_INVALID'
>([
  'TASK_INVALID',
  'BUILD_CONTEXT_REJECTED',
  'BUILD_FAILED',
  'CONTAINER_FAILED',
  'CONTAINER_TIMEOUT',
  'CONTAINER_OOM',
  'DISK_LIMIT',
  'ARCHIVE_REJECTED',
  'PERFORMANCE_INVALID',
  'PREDICTION_MISSING',
  'OUTPUT_INVALID',
]);

/**
 * A storage or orchestrator answer that will be the same next time (a 404 for the
 * task's data, a refused report) is about the task; a service that is down or answers
 * 5xx is passing trouble of the platform, not of the task, and refused credentials are the
 * worker's.
 */
const SERVICE_CODES: ReadonlySet<ErrorCode> = new Set(['STORAGE_FAILED', 'ORCHESTRATOR_FAILED']);

export function faultOf(error: WorkerError): Fault {
  if (error.workerFault) return 'worker';
  if (TASK_FAULT_CODES.has(error.code)) return 'task';
  if (SERVICE_CODES.has(error.code)) return error.retryable ? 'worker' : 'task';
  return 'worker';
}

export interface RetryPolicy {
  /** Deliveries of one message before the task is reported failed; 1 = no retry. */
  maxAttempts: number;
  /** Delay before the second delivery; doubles with each attempt. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 5,
  baseDelayMs: 10_000,
  maxDelayMs: 10 * 60_000,
};

/** One run, nobody to requeue to: a worker fault is left for the operator to run again. */
export const ONE_SHOT: RetryPolicy = {
  maxAttempts: Number.POSITIVE_INFINITY,
  baseDelayMs: 0,
  maxDelayMs: 0,
};

export type TaskOutcome =
  | { action: 'done' }
  /** Report the task failed with `reason`, and finish it. */
  | { action: 'failed'; fault: Fault; reason: string; error: WorkerError }
  /** Not the task's fault: run it again after `delayMs`, report nothing. */
  | { action: 'retry'; fault: 'worker'; delayMs: number; reason: string; error: WorkerError };

/**
 * `attempts` counts this one (1 on a first delivery). Worker faults are retried with
 * exponential backoff and jitter, so that many workers do not retry in step.
 */
export function decideOutcome(
  report: TaskReport,
  attempts: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): TaskOutcome {
  if (report.status === 'done') return { action: 'done' };
  const error = report.error ?? new WorkerError('INTERNAL', 'the task failed without a reason');
  if (faultOf(error) === 'task') {
    return { action: 'failed', fault: 'task', reason: error.message, error };
  }
  if (attempts >= policy.maxAttempts) {
    const tries = attempts === 1 ? '1 attempt' : `${attempts} attempts`;
    return {
      action: 'failed',
      fault: 'worker',
      reason: `${workerFaultReason(error)} (gave up after ${tries})`,
      error,
    };
  }
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempts - 1));
  // "Equal jitter": at least half the ceiling, so a retry never comes at once.
  const delayMs = Math.round(ceiling / 2 + (random() * ceiling) / 2);
  return { action: 'retry', fault: 'worker', delayMs, reason: workerFaultReason(error), error };
}

export function workerFaultReason(error: WorkerError): string {
  return `the worker could not run this task: ${error.message}`;
}
