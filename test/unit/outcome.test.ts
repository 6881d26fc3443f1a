import { describe, expect, it } from 'vitest';
import { type ErrorCode, toWorkerError, WorkerError } from '../../src/errors.js';
import { decideOutcome, faultOf, ONE_SHOT, TASK_FAULT_CODES } from '../../src/tasks/outcome.js';
import type { TaskReport } from '../../src/tasks/run-task.js';
import { failure } from '../support/failed-report.js';

const policy = { maxAttempts: 4, baseDelayMs: 1000, maxDelayMs: 5000 };

function failed(error?: WorkerError): TaskReport {
  return { status: 'failed', kind: 'learn', uuid: 'u', steps: [], failedStep: 'train', error };
}

const error = (code: string, retryable = false) =>
  new WorkerError(code as ErrorCode, `${code} happened`, { retryable });

// Every code of src/errors.ts, and the codes other changes add, with whose fault it is.
const FAULTS: [code: string, retryable: boolean, fault: 'task' | 'worker'][] = [
  ['TASK_INVALID', false, 'task'],
  ['BUILD_CONTEXT_REJECTED', false, 'task'],
  ['BUILD_FAILED', false, 'task'],
  ['CONTAINER_FAILED', false, 'task'],
  ['CONTAINER_TIMEOUT', false, 'task'],
  ['CONTAINER_OOM', false, 'task'],
  // Killed by a signal neither the worker nor the memory limit sent: an operator, the host.
  ['CONTAINER_KILLED', true, 'worker'],
  ['DISK_LIMIT', false, 'task'],
  ['ARCHIVE_REJECTED', false, 'task'],
  ['PERFORMANCE_INVALID', false, 'task'],
  ['PREDICTION_MISSING', false, 'task'],
  ['OUTPUT_INVALID', false, 'task'],
  // The service refuses what the task names (a 404 for its data): the same next time.
  ['STORAGE_FAILED', false, 'task'],
  ['ORCHESTRATOR_FAILED', false, 'task'],
  // The service is down or answers 5xx.
  ['STORAGE_FAILED', true, 'worker'],
  ['ORCHESTRATOR_FAILED', true, 'worker'],
  ['INTERNAL', false, 'worker'],
  ['INTERNAL', true, 'worker'],
  ['ENGINE_FAILED', true, 'worker'],
  ['ENGINE_NOT_FOUND', false, 'worker'],
  ['CONFIG_INVALID', false, 'worker'],
  ['CANCELLED', true, 'worker'],
  ['TASK_TAKEN', false, 'worker'],
  ['A_CODE_NOBODY_KNOWS', false, 'worker'],
];

describe('faultOf', () => {
  it.each(FAULTS)('%s (retryable %s) is the %s fault', (code, retryable, fault) => {
    expect(faultOf(error(code, retryable))).toBe(fault);
  });

  it('names every task-fault code in the table above', () => {
    const services = ['STORAGE_FAILED', 'ORCHESTRATOR_FAILED'];
    const listed = FAULTS.filter(([code, , fault]) => fault === 'task' && !services.includes(code));
    expect(new Set(listed.map(([code]) => code))).toEqual(TASK_FAULT_CODES);
  });

  it("takes a service's refusal of the worker's credentials for the worker fault", async () => {
    const { createServer } = await import('node:http');
    const { HttpStorageClient } = await import('../../src/clients/storage.js');
    const { HttpOrchestratorClient } = await import('../../src/clients/orchestrator.js');
    for (const status of [401, 403]) {
      const server = createServer((_req, res) => res.writeHead(status).end('no'));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as { port: number };
      const options = { host: '127.0.0.1', port, user: 'u', password: 'wrong' };
      const storage = new HttpStorageClient(options);
      const orchestrator = new HttpOrchestratorClient(options);
      const refused = [
        await storage.getMetadata('data', 'x').catch((e: WorkerError) => e),
        await orchestrator.reportFailed('learn', 'x', failure('why')).catch((e: WorkerError) => e),
      ];
      await storage.close();
      await orchestrator.close();
      server.close();
      for (const e of refused) {
        expect(e).toBeInstanceOf(WorkerError);
        expect((e as WorkerError).message).toMatch(/refused the credentials/);
        expect(faultOf(e as WorkerError), `${status}: ${e}`).toBe('worker');
        expect(decideOutcome(failed(e as WorkerError), 1, policy).action).toBe('retry');
      }
    }
  });

  it('takes an unexpected error of the worker (ENOENT, EACCES, ENOSPC) for the worker fault', () => {
    for (const code of ['ENOENT', 'EACCES', 'ENOSPC']) {
      const raw = Object.assign(new Error(`${code}: open '/tmp/x/model.tar.gz'`), { code });
      expect(faultOf(toWorkerError(raw))).toBe('worker');
    }
  });
});

describe('decideOutcome', () => {
  it('a done task is done', () => {
    expect(
      decideOutcome({ status: 'done', kind: 'predict', uuid: 'u', steps: [] }, 9, policy),
    ).toEqual({
      action: 'done',
    });
  });

  it.each(FAULTS.filter(([, , fault]) => fault === 'task'))(
    '%s (retryable %s) fails at once with its own message, whatever the attempts left',
    (code, retryable) => {
      const e = error(code, retryable);
      expect(decideOutcome(failed(e), 1, policy)).toEqual({
        action: 'failed',
        fault: 'task',
        reason: `${code} happened`,
        error: e,
      });
    },
  );

  it.each(FAULTS.filter(([, , fault]) => fault === 'worker'))(
    '%s (retryable %s) is retried as the worker fault, then failed when attempts run out',
    (code, retryable) => {
      const e = error(code, retryable);
      expect(decideOutcome(failed(e), 3, policy, () => 1)).toEqual({
        action: 'retry',
        fault: 'worker',
        delayMs: 4000,
        reason: `the worker could not run this task: ${code} happened`,
        error: e,
      });
      expect(decideOutcome(failed(e), 4, policy)).toEqual({
        action: 'failed',
        fault: 'worker',
        reason: `the worker could not run this task: ${code} happened (gave up after 4 attempts)`,
        error: e,
      });
    },
  );

  it('retries with a delay that doubles, capped, between half and all of it', () => {
    const e = error('ENGINE_FAILED', true);
    const low = (attempts: number) => decideOutcome(failed(e), attempts, policy, () => 0);
    const high = (attempts: number) => decideOutcome(failed(e), attempts, policy, () => 1);
    expect(low(1)).toMatchObject({ action: 'retry', delayMs: 500 });
    expect(high(1)).toMatchObject({ action: 'retry', delayMs: 1000 });
    expect(high(2)).toMatchObject({ action: 'retry', delayMs: 2000 });
    expect(high(3)).toMatchObject({ action: 'retry', delayMs: 4000 });
    const capped = { ...policy, maxDelayMs: 3000 };
    expect(decideOutcome(failed(e), 3, capped, () => 1)).toMatchObject({ delayMs: 3000 });
  });

  it('with one attempt allowed, a worker fault fails at once, naming the worker', () => {
    const e = toWorkerError(
      new Error("ENOENT: no such file or directory, open '/tmp/t/model.tar.gz'"),
    );
    expect(decideOutcome(failed(e), 1, { ...policy, maxAttempts: 1 })).toMatchObject({
      action: 'failed',
      fault: 'worker',
      reason:
        "the worker could not run this task: ENOENT: no such file or directory, open '/tmp/t/model.tar.gz' (gave up after 1 attempt)",
    });
  });

  it('a failure without an error is the worker fault', () => {
    expect(decideOutcome(failed(), 1, policy)).toMatchObject({ action: 'retry', fault: 'worker' });
  });

  it('one-shot (task exec) never gives up on a worker fault: the operator runs it again', () => {
    expect(decideOutcome(failed(error('INTERNAL')), 1, ONE_SHOT)).toMatchObject({
      action: 'retry',
      fault: 'worker',
      reason: 'the worker could not run this task: INTERNAL happened',
    });
    expect(decideOutcome(failed(error('CONTAINER_OOM')), 1, ONE_SHOT)).toMatchObject({
      action: 'failed',
      fault: 'task',
    });
  });
});
