import { setTimeout as sleep } from 'node:timers/promises';
import type { WorkerError } from '../errors.js';
import type { Logger } from '../log.js';

export type ServiceName = 'storage' | 'orchestrator';

const FIRST_PROBE_MS = 2_000;
const LAST_PROBE_MS = 30_000;
/** A probe that takes longer than this counts as the service not answering. */
const PROBE_TIMEOUT_MS = 10_000;

export interface ServiceGateOptions {
  /** Answers when the service answers (storage: /health; the orchestrator: any HTTP answer). */
  probes: Record<ServiceName, (signal: AbortSignal) => Promise<void>>;
  log: Logger;
  /** Called when an outage starts (stop taking messages) and when it ends (take them again). */
  onChange(down: boolean): void;
  firstProbeMs?: number;
  lastProbeMs?: number;
}

/**
 * Storage or the orchestrator down is nobody's fault but theirs: a task that failed because
 * of it must not spend an attempt, and no new task should be taken to fail the same way.
 * A task's failure counts as an outage only when the service then fails a probe too, so a
 * service that answers its health call but fails one task's call every time still ends
 * that task through the retry policy. While it is down the worker takes nothing (RDY 0),
 * probes it with a growing pause, and takes messages again once it answers.
 */
export class ServiceGate {
  private outage?: { service: ServiceName; reason: string; since: number };
  /** Per task: its deliveries that ended in an outage, not counted as attempts. */
  private readonly spent = new Map<string, number>();
  private probing?: Promise<void>;
  private closed = new AbortController();

  constructor(private readonly options: ServiceGateOptions) {}

  /** Why no task is taken now, or undefined. */
  get reason(): string | undefined {
    if (!this.outage) return undefined;
    const seconds = Math.round((Date.now() - this.outage.since) / 1000);
    return `${this.outage.service} is not answering (for ${seconds}s): ${this.outage.reason}`;
  }

  get down(): boolean {
    return this.outage !== undefined;
  }

  /**
   * After a task failed with `error`: true when it failed because its service is down
   * (confirmed by a probe), in which case the delivery is not counted against the task.
   */
  async isOutage(taskUuid: string, error: WorkerError): Promise<boolean> {
    const service = serviceOf(error);
    if (!service) return false;
    if (!this.outage) {
      try {
        await this.probe(service);
        return false;
      } catch (probeError) {
        // Two tasks may find the same outage at once: it begins once.
        if (!this.outage) this.begin(service, error, probeError);
      }
    }
    this.countOutage(taskUuid);
    return true;
  }

  /** A delivery handed back unrun while the services are down is not an attempt either. */
  countOutage(taskUuid: string): void {
    this.spent.set(taskUuid, (this.spent.get(taskUuid) ?? 0) + 1);
  }

  /** NSQ's attempts of the task, less those that ended in an outage. */
  attempts(taskUuid: string, deliveries: number): number {
    return Math.max(1, deliveries - (this.spent.get(taskUuid) ?? 0));
  }

  /** The task is answered for good: its count is no longer needed. */
  forget(taskUuid: string): void {
    this.spent.delete(taskUuid);
  }

  close(): void {
    this.closed.abort();
  }

  private begin(service: ServiceName, error: WorkerError, probeError: unknown): void {
    const reason = (probeError instanceof Error ? probeError.message : String(probeError)).slice(
      0,
      300,
    );
    this.outage = { service, reason, since: Date.now() };
    this.options.log.warn(
      { service, err: error.toJSON() },
      `${service} is not answering: not taking tasks until it does; the tasks it failed are requeued without spending an attempt`,
    );
    this.options.onChange(true);
    this.probing ??= this.probeUntilUp(service).finally(() => {
      this.probing = undefined;
    });
  }

  private async probeUntilUp(service: ServiceName): Promise<void> {
    let pause = this.options.firstProbeMs ?? FIRST_PROBE_MS;
    const last = this.options.lastProbeMs ?? LAST_PROBE_MS;
    for (;;) {
      try {
        await sleep(pause, undefined, { signal: this.closed.signal });
      } catch {
        return;
      }
      try {
        await this.probe(service);
        break;
      } catch (error) {
        if (this.outage) this.outage.reason = (error as Error).message.slice(0, 300);
        pause = Math.min(pause * 2, last);
      }
    }
    const seconds = Math.round((Date.now() - (this.outage?.since ?? Date.now())) / 1000);
    this.outage = undefined;
    this.options.log.info({ service, seconds }, `${service} answers again: taking tasks again`);
    this.options.onChange(false);
  }

  private probe(service: ServiceName): Promise<void> {
    const signal = AbortSignal.any([AbortSignal.timeout(PROBE_TIMEOUT_MS), this.closed.signal]);
    return this.options.probes[service](signal);
  }
}

/** The service whose own trouble (network, 5xx, time-out) the error is, if it is one. */
function serviceOf(error: WorkerError): ServiceName | undefined {
  if (!error.retryable || error.workerFault) return undefined;
  if (error.code === 'STORAGE_FAILED') return 'storage';
  if (error.code === 'ORCHESTRATOR_FAILED') return 'orchestrator';
  return undefined;
}
