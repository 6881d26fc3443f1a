import type { FailedReport } from '../../src/clients/types.js';

/** A failed report as the worker sends it, for client tests. */
export function failure(message: string, code = 'CONTAINER_FAILED'): FailedReport {
  return {
    error: { code, step: 'train', fault: 'task', message, retryable: false, attempts: 1 },
  };
}
