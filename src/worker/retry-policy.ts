import type { WorkerError } from '../errors.js';

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

export type RetryDecision =
  | { action: 'requeue'; delayMs: number; reason: string }
  | { action: 'fail'; reason: string };

/**
 * Chooses by the source of the error. Transient errors (a service down or answering
 * 5xx, an engine hiccup) are tried again later, with exponential backoff and jitter so
 * that many workers do not retry in step; everything else (an invalid task, a failing,
 * timed-out or out-of-memory submission, an invalid performance.json) cannot succeed on
 * another try and fails at once.
 */
export function decideRetry(
  error: WorkerError,
  attempts: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): RetryDecision {
  if (!error.retryable) return { action: 'fail', reason: error.message };
  if (attempts >= policy.maxAttempts) {
    return { action: 'fail', reason: `${error.message} (gave up after ${attempts} attempts)` };
  }
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempts - 1));
  // "Equal jitter": at least half the ceiling, so a retry never comes at once.
  const delayMs = Math.round(ceiling / 2 + (random() * ceiling) / 2);
  return { action: 'requeue', delayMs, reason: error.message };
}
