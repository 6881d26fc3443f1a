import { toWorkerError, WorkerError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseTask, readableTaskUuid, taskKindOf } from '../schemas.js';
import type { TaskEnv, TaskKind } from '../tasks/context.js';
import { acquireTaskGpus, gpuNames } from '../tasks/gpus.js';
import { decideOutcome, type RetryPolicy } from '../tasks/outcome.js';
import { failedReport } from '../tasks/report-body.js';
import {
  executeTask,
  failedReportOf,
  type ParsedTask,
  type TaskReport,
} from '../tasks/run-task.js';
import { trimImages } from '../tasks/scope.js';
import { type DiskGate, LOW_DISK_DELAY_MS } from './disk-gate.js';
import type { Journal } from './journal.js';
import type { MessageOutcome, WorkerRecorder } from './metrics.js';
import type { Lease } from './nsq-reader.js';
import type { ServiceGate } from './service-gate.js';
import { TaskLogWriter } from './task-logs.js';

export interface RunnerDeps {
  env: TaskEnv;
  journal: Journal;
  retry: RetryPolicy;
  log: Logger;
  /** Whether the host has room for a new task (--min-free-disk); none = always. */
  disk?: DiskGate;
  /** Whether storage and the orchestrator answer (see service-gate.ts); none = not watched. */
  services?: ServiceGate;
  metrics?: WorkerRecorder;
  /** The worker is draining (a stop signal came): see settle. */
  stopping?: () => boolean;
  /** Where each task's step output is kept, and how much of it (see task-logs.ts); none = not kept. */
  taskLogs?: { stateDir: string; maxBytes: number };
}

/** How long a message handed back during an outage waits in NSQ. */
const OUTAGE_DELAY_MS = 5_000;

/** Runs of this worker that ended while running one task before it stops trying it. */
export const GIVE_UP_AFTER_INTERRUPTIONS = 3;

export { MESSAGE_OUTCOMES, type MessageOutcome } from './metrics.js';

/**
 * Runs the task of one NSQ message from claim to FIN or REQ. The message stays in flight
 * (touched) for as long as the task runs; tasks/outcome.ts decides between requeue and
 * failure; a lost connection means the message belongs to NSQ again and is not answered.
 */
export async function runMessage(
  deps: RunnerDeps,
  kind: TaskKind,
  lease: Lease,
  signal: AbortSignal,
): Promise<MessageOutcome> {
  const message = lease.message;
  const base = deps.log.child({ kind, message: message.id, attempt: message.attempts });

  let parsed: ParsedTask;
  try {
    parsed = parseTask(JSON.parse(message.body.toString('utf8')), kind);
  } catch (error) {
    return finishInvalid(deps, kind, lease, error, base);
  }
  const uuid = parsed.task.uuid;
  const taskLog = base.child({ task: uuid });
  // Before the claim: another worker with room should get this task, not this one.
  if (await deps.disk?.check()) {
    taskLog.debug('low on disk space: message handed back');
    answer(lease, taskLog, () => message.requeue(LOW_DISK_DELAY_MS, false));
    lease.release();
    return 'low-disk';
  }
  // Already in transit when the readers stopped: back to NSQ, not counted as an attempt.
  if (deps.services?.down) {
    taskLog.debug('storage or the orchestrator is down: message handed back');
    deps.services.countOutage(uuid);
    answer(lease, taskLog, () => message.requeue(OUTAGE_DELAY_MS, false));
    lease.release();
    return 'outage';
  }
  // The task's GPUs are its own until its containers are removed (executeTask returned).
  // The pool was sized for every slot at start-up, so a free message always finds them,
  // as long as they are free when the slot is: the slot frees once the message is answered,
  // which is after executeTask, and a next message may arrive before this finally runs.
  const gpus = acquireTaskGpus(deps.env, kind);
  lease.whenSettled(() => gpus.release());
  const named = gpuNames(gpus.gpus);
  const log = named ? taskLog.child({ gpus: named }) : taskLog;
  const stopTouching = keepInFlight(lease, log);
  const entry = {
    taskUuid: uuid,
    kind,
    messageId: message.id,
    attempts: message.attempts,
    startedAt: new Date().toISOString(),
    ...(named ? { gpus: named } : {}),
  };
  // Journal writes go one after another: the step on disk is the last one started, no
  // write lands after the entry is removed, and "step started" is logged once it is on
  // disk, so a crash after that line leaves that step in the journal.
  let journalled: Promise<void> = Promise.resolve();
  let executed = false;
  let output: TaskLogWriter | undefined;
  try {
    await deps.journal.write(entry);
    try {
      await deps.env.orchestrator.claim(
        kind === 'learn' ? 'learnuplet' : 'preduplet',
        uuid,
        deps.env.workerId,
        signal,
      );
    } catch (error) {
      if (error instanceof WorkerError && error.code === 'TASK_TAKEN' && message.attempts === 1) {
        log.info('the orchestrator says another worker has this task: not running it');
        answer(lease, log, () => message.finish());
        return 'taken-elsewhere';
      }
      // A redelivery finds its task already taken (by this worker's earlier attempt,
      // or one that crashed): it proceeds.
      if (!(error instanceof WorkerError && error.code === 'TASK_TAKEN')) {
        return await settle(
          deps,
          lease,
          {
            kind,
            uuid,
            steps: [],
            status: 'failed',
            error: toWorkerError(error, 'ORCHESTRATOR_FAILED'),
          },
          log,
          signal,
        );
      }
    }

    // A task this worker was running each time it ended (a crash, an out-of-memory kill)
    // would end it again: reported failed as the worker's fault, not run a fourth time.
    const interruptions = await deps.journal.interruptions(uuid);
    if (interruptions >= GIVE_UP_AFTER_INTERRUPTIONS) {
      const error = new WorkerError(
        'INTERNAL',
        `this worker stopped ${interruptions} times while it ran this task (crashed or killed: its log says how), so it does not run it again`,
        { workerFault: true },
      );
      await deps.journal.forgetInterruptions(uuid);
      return await settle(
        deps,
        lease,
        { kind, uuid, steps: [], status: 'failed', error },
        log,
        signal,
        { giveUp: true },
      );
    }
    log.info('task started');
    executed = true;
    output = await openTaskLog(deps, { uuid, kind, attempt: message.attempts }, log);
    const report = await executeTask(
      deps.env,
      {
        signal,
        gpus: gpus.gpus,
        onEvent: (event) => {
          deps.metrics?.taskEvent(kind, event);
          if (event.type === 'step-start') {
            const step = event.step;
            journalled = journalled
              .then(() => deps.journal.write({ ...entry, step }))
              .catch((error) => log.warn({ err: error }, 'could not update the journal'))
              .then(() => log.info({ step }, 'step started'));
          } else if (event.type === 'log') {
            output?.line(event.step, event.line);
            log.debug({ step: event.step, stream: event.stream }, event.line);
          } else if (event.type === 'warning') {
            log.warn({ step: event.step }, event.message);
          }
        },
      },
      parsed,
      log,
    );
    await journalled;
    deps.metrics?.taskReport(report);
    const outcome = await settle(deps, lease, report, log, signal);
    await output?.close(outcome);
    return outcome;
  } finally {
    await output?.close('error');
    if (executed) {
      await deps.journal
        .forgetInterruptions(uuid)
        .catch((error) => log.warn({ err: error }, 'could not update the journal'));
    }
    gpus.release();
    stopTouching();
    lease.release();
    await journalled;
    await deps.journal
      .remove(message.id)
      .catch((error) => log.warn({ err: error }, 'could not update the journal'));
    // After the answer: the image cache's housekeeping is no part of the task's result.
    if (executed) await trimImages(deps.env, log);
  }
}

/** The file of this attempt's output; none when none is kept or its folder cannot be made. */
async function openTaskLog(
  deps: RunnerDeps,
  task: { uuid: string; kind: TaskKind; attempt: number },
  log: Logger,
): Promise<TaskLogWriter | undefined> {
  if (!deps.taskLogs || deps.taskLogs.maxBytes <= 0) return undefined;
  try {
    return await TaskLogWriter.open(deps.taskLogs.stateDir, task, deps.taskLogs.maxBytes);
  } catch (error) {
    // The operator's copy of the output is no reason to fail the task.
    log.warn({ err: error }, "could not keep the task's output in the state folder");
    return undefined;
  }
}

/** Answers the message as tasks/outcome.ts decides, with the daemon's own special cases. */
async function settle(
  deps: RunnerDeps,
  lease: Lease,
  report: TaskReport,
  log: Logger,
  signal: AbortSignal,
  options: { giveUp?: boolean } = {},
): Promise<MessageOutcome> {
  const message = lease.message;
  const error = report.error ?? new WorkerError('INTERNAL', 'the task failed without a reason');
  if (report.status === 'failed' && signal.aborted) {
    // Shutdown: hand the message back at once, for another worker or the next start.
    log.warn({ step: report.failedStep }, 'task cancelled by shutdown: requeued');
    return answer(lease, log, () => message.requeue(0, false)) ? 'cancelled' : 'lease-lost';
  }
  if (
    report.status === 'failed' &&
    (error.code === 'CONTAINER_FAILED' || error.code === 'CONTAINER_KILLED') &&
    deps.stopping?.()
  ) {
    // A container that ends while the worker stops may have been ended by that stop (a
    // signal to the host's processes, a supervisor's kill): never the task's fault. The
    // next worker runs it again.
    log.warn(
      { step: report.failedStep, err: error.toJSON() },
      'a container ended while the worker was stopping: requeued, not reported',
    );
    return answer(lease, log, () => message.requeue(0, false)) ? 'cancelled' : 'lease-lost';
  }
  if (
    report.status === 'failed' &&
    report.failedStep === 'report' &&
    error.code === 'ORCHESTRATOR_FAILED' &&
    !error.retryable &&
    message.attempts > 1
  ) {
    // A redelivery whose result the orchestrator refuses: an earlier attempt (on a lost
    // connection, or before a crash) reported it already. Reporting it failed now could
    // overwrite that result.
    log.warn(
      { err: error.toJSON() },
      'the orchestrator refused the result of this redelivery: an earlier attempt reported the task; finished',
    );
    return answer(lease, log, () => message.finish()) ? 'done' : 'lease-lost';
  }
  if (
    report.status === 'failed' &&
    report.error instanceof WorkerError &&
    (await deps.services?.isOutage(report.uuid, report.error))
  ) {
    log.warn(
      { step: report.failedStep, err: error.toJSON() },
      'the service is down: requeued without spending an attempt',
    );
    return answer(lease, log, () => message.requeue(OUTAGE_DELAY_MS, false))
      ? 'outage'
      : 'lease-lost';
  }
  const attempts = deps.services?.attempts(report.uuid, message.attempts) ?? message.attempts;
  // Giving up: this attempt is the last one.
  const policy = options.giveUp ? { ...deps.retry, maxAttempts: attempts } : deps.retry;
  const decision = decideOutcome(report, attempts, policy);
  if (decision.action !== 'retry') deps.services?.forget(report.uuid);
  if (decision.action === 'done') {
    log.info(
      { steps: report.steps, performance: report.performance, prediction: report.predictionUuid },
      'task done',
    );
    return answer(lease, log, () => message.finish()) ? 'done' : 'lease-lost';
  }
  if (decision.action === 'retry') {
    log.warn(
      {
        step: report.failedStep,
        err: error.toJSON(),
        fault: decision.fault,
        delayMs: decision.delayMs,
      },
      `not the submission's fault, requeued: ${decision.reason}`,
    );
    return answer(lease, log, () => message.requeue(decision.delayMs, false))
      ? 'requeued'
      : 'lease-lost';
  }
  log.error(
    { step: report.failedStep, err: error.toJSON(), fault: decision.fault },
    `task failed: ${decision.reason}`,
  );
  try {
    await deps.env.orchestrator.reportFailed(
      report.kind,
      report.uuid,
      failedReportOf(deps.env, report, decision, message.attempts),
    );
  } catch (reportError) {
    if (reportError instanceof WorkerError && !reportError.retryable) {
      // The orchestrator refuses it (the task is finished already, or unknown): asking
      // again later gets the same answer.
      log.error(
        { err: reportError.toJSON() },
        'the orchestrator refused the failure report; finished',
      );
      return answer(lease, log, () => message.finish()) ? 'failed' : 'lease-lost';
    }
    // Finishing now would lose the task: the orchestrator would never hear of it.
    log.error(
      { err: reportError },
      'could not report the failure to the orchestrator: requeued to report it later',
    );
    return answer(lease, log, () => message.requeue(deps.retry.maxDelayMs, false))
      ? 'requeued'
      : 'lease-lost';
  }
  return answer(lease, log, () => message.finish()) ? 'failed' : 'lease-lost';
}

async function finishInvalid(
  deps: RunnerDeps,
  kind: TaskKind,
  lease: Lease,
  error: unknown,
  log: Logger,
): Promise<MessageOutcome> {
  const reason =
    error instanceof WorkerError
      ? error.message
      : `the message is not JSON: ${(error as Error).message}`;
  let uuid: string | undefined;
  let shape: TaskKind | undefined;
  try {
    const json: unknown = JSON.parse(lease.message.body.toString('utf8'));
    uuid = readableTaskUuid(json);
    shape = taskKindOf(json);
  } catch {
    uuid = undefined;
  }
  // Reported only on the topic's own route: a predict message on the learn topic is no
  // learn task, and /learndone/ must not hear of a uuid it may give to another task.
  const reported = uuid !== undefined && shape === kind;
  const why =
    uuid === undefined || reported
      ? ''
      : shape === undefined
        ? ' (not reported: its fields are those of neither or both kinds of task)'
        : ` (not reported: its fields are those of a ${shape} task, not of a ${kind} task)`;
  log.error(
    { task: uuid, body: lease.message.body.subarray(0, 512).toString('utf8') },
    `invalid task message, finished${why}: ${reason}`,
  );
  if (reported && uuid) {
    const failure = failedReport(deps.env, {
      error: error instanceof WorkerError ? error : new WorkerError('TASK_INVALID', reason),
      fault: 'task',
      reason,
      attempts: lease.message.attempts,
    });
    await deps.env.orchestrator
      .reportFailed(kind, uuid, failure)
      .catch((reportError) =>
        log.warn({ err: reportError, task: uuid }, 'could not report the invalid task'),
      );
  }
  answer(lease, log, () => lease.message.finish());
  lease.release();
  return 'invalid';
}

/** Answers nsqd unless the connection that delivered the message is gone. */
function answer(lease: Lease, log: Logger, respond: () => void): boolean {
  if (lease.lost) {
    log.warn(
      { nsqd: lease.nsqd },
      'the connection to nsqd was lost while the task ran: NSQ delivers the message again',
    );
    return false;
  }
  respond();
  lease.settle();
  return true;
}

/**
 * Touches the message well before its timeout for as long as the task runs. nsqd never
 * extends a message past delivery + max-msg-timeout, so that moment is logged.
 */
function keepInFlight(lease: Lease, log: Logger): () => void {
  const message = lease.message;
  const every = Math.max(500, Math.floor(message.msgTimeout / 3));
  let warned = false;
  const timer = setInterval(() => {
    if (lease.lost || lease.expired || message.hasResponded) return;
    const hard = message.timeUntilTimeout(true);
    if (hard !== null && hard <= 0) {
      lease.expired = true;
      return;
    }
    if (!warned && hard !== null && hard < every) {
      warned = true;
      log.warn(
        { maxMsgTimeoutMs: message.maxMsgTimeout },
        "the task outlives nsqd's --max-msg-timeout: NSQ will deliver it again while it runs",
      );
    }
    message.touch();
  }, every);
  timer.unref();
  return () => clearInterval(timer);
}
