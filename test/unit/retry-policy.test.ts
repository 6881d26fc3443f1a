import { describe, expect, it } from 'vitest';
import { WorkerError } from '../../src/errors.js';
import { decideRetry } from '../../src/worker/retry-policy.js';

const policy = { maxAttempts: 4, baseDelayMs: 1000, maxDelayMs: 5000 };
const transient = new WorkerError('STORAGE_FAILED', 'storage answered 503', { retryable: true });
const permanent = new WorkerError('CONTAINER_OOM', 'the submission ran out of memory');

describe('decideRetry', () => {
  it('fails a permanent error at once, whatever the attempts left', () => {
    expect(decideRetry(permanent, 1, policy)).toEqual({
      action: 'fail',
      reason: 'the submission ran out of memory',
    });
  });

  it('requeues a transient error with a delay that doubles, capped, between half and all of it', () => {
    const low = (attempts: number) => decideRetry(transient, attempts, policy, () => 0);
    const high = (attempts: number) => decideRetry(transient, attempts, policy, () => 1);
    expect(low(1)).toMatchObject({ action: 'requeue', delayMs: 500 });
    expect(high(1)).toMatchObject({ action: 'requeue', delayMs: 1000 });
    expect(high(2)).toMatchObject({ action: 'requeue', delayMs: 2000 });
    expect(high(3)).toMatchObject({ action: 'requeue', delayMs: 4000 });
    expect(decideRetry(transient, 3, { ...policy, maxDelayMs: 3000 }, () => 1)).toMatchObject({
      delayMs: 3000,
    });
  });

  it('fails with the last reason when attempts run out', () => {
    expect(decideRetry(transient, 4, policy)).toEqual({
      action: 'fail',
      reason: 'storage answered 503 (gave up after 4 attempts)',
    });
  });
});
