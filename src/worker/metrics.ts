import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { freeBytes } from '../config/free-space.js';
import type { StepName, TaskEnv, TaskEvent, TaskKind } from '../tasks/context.js';
import type { TaskReport } from '../tasks/run-task.js';
import type { MessageOutcome } from './task-runner.js';

/** Why a message went back to NSQ. */
export type RequeueReason =
  | 'worker-fault'
  | 'low-disk'
  | 'service-outage'
  | 'shutdown'
  | 'no-free-slot'
  | 'draining';

/** The outcomes that are a requeue sent to nsqd, and why it was sent. */
const REQUEUED_BECAUSE: Partial<Record<MessageOutcome, RequeueReason>> = {
  // A passing fault of the worker, its host or a service (or a failure that could not be reported).
  requeued: 'worker-fault',
  'low-disk': 'low-disk',
  outage: 'service-outage',
  cancelled: 'shutdown',
};

/**
 * What the worker tells about its work. Every method is cheap and never throws; a worker
 * without metrics passes none.
 */
export interface WorkerRecorder {
  /** A message was taken to be run (it counts in flight until taskFinished). */
  taskStarted(kind: TaskKind): void;
  /** The message's task ended ('error': the worker itself failed unexpectedly). */
  taskFinished(kind: TaskKind, outcome: MessageOutcome | 'error'): void;
  taskEvent(kind: TaskKind, event: TaskEvent): void;
  /** How the task ran, before its message is answered. */
  taskReport(report: TaskReport): void;
  /** A message handed back without running (the requeues of taskFinished are counted there). */
  requeued(kind: TaskKind, reason: RequeueReason): void;
  nsqdConnected(kind: TaskKind, address: string): void;
  nsqdClosed(kind: TaskKind, address: string): void;
}

const PREFIX = 'compute_worker_';
const KINDS: readonly TaskKind[] = ['learn', 'predict'];
const BUILD_STEPS: Partial<Record<StepName, 'workflow' | 'submission'>> = {
  'build-workflow': 'workflow',
  'build-submission': 'submission',
};
/** The upload step's note ends with the size: "model <uuid>, 123 bytes" (tasks/learn.ts, predict.ts). */
const UPLOAD_NOTE = /, (\d+) bytes$/;
/** The build steps' note ends with " (cached)" when the image existed (tasks/images.ts). */
const CACHED_NOTE = / \(cached\)$/;

/** The worker's Prometheus metrics, in a registry of their own. */
export class WorkerMetrics implements WorkerRecorder {
  readonly registry = new Registry();
  private readonly connected: Record<TaskKind, Set<string>> = {
    learn: new Set(),
    predict: new Set(),
  };

  private readonly started = new Counter({
    name: `${PREFIX}tasks_started_total`,
    help: 'Messages taken to be run, by task kind.',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  private readonly finished = new Counter({
    name: `${PREFIX}tasks_finished_total`,
    help: 'Messages whose task ended, by task kind and outcome (done, failed, requeued, taken-elsewhere, invalid, cancelled, lease-lost, low-disk, outage).',
    labelNames: ['kind', 'outcome'],
    registers: [this.registry],
  });
  private readonly inFlight = new Gauge({
    name: `${PREFIX}tasks_in_flight`,
    help: 'Tasks running now, by task kind.',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  private readonly stepSeconds = new Histogram({
    name: `${PREFIX}step_duration_seconds`,
    help: 'Duration of the steps that ended, by task kind and step.',
    labelNames: ['kind', 'step'],
    buckets: [0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200],
    registers: [this.registry],
  });
  private readonly requeues = new Counter({
    name: `${PREFIX}messages_requeued_total`,
    help: 'Messages handed back to NSQ, by task kind and reason.',
    labelNames: ['kind', 'reason'],
    registers: [this.registry],
  });
  private readonly builds = new Counter({
    name: `${PREFIX}image_builds_total`,
    help: 'Images needed by tasks, by role and result (hit: already built, built, failed).',
    labelNames: ['role', 'result'],
    registers: [this.registry],
  });
  private readonly buildSeconds = new Histogram({
    name: `${PREFIX}image_build_duration_seconds`,
    help: 'Duration of the image builds that built an image (context download included), by role.',
    labelNames: ['role'],
    buckets: [1, 5, 10, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  });
  private readonly stagedIn = new Counter({
    name: `${PREFIX}staged_in_bytes_total`,
    help: 'Bytes downloaded from storage into task volumes, by task kind.',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  private readonly stagedOut = new Counter({
    name: `${PREFIX}staged_out_bytes_total`,
    help: 'Bytes uploaded to storage (models, predictions), by task kind.',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  private readonly nsqdConnections = new Gauge({
    name: `${PREFIX}nsqd_connections`,
    help: 'nsqd connections that are subscribed, by topic kind.',
    labelNames: ['kind'],
    registers: [this.registry],
  });

  constructor(env?: Pick<TaskEnv, 'gpus' | 'tmpDir' | 'engine'>) {
    for (const kind of KINDS) {
      this.inFlight.set({ kind }, 0);
      this.nsqdConnections.set({ kind }, 0);
    }
    if (!env) return;
    const gpus = env.gpus;
    if (gpus) {
      new Gauge({
        name: `${PREFIX}gpus`,
        help: 'GPUs this worker hands to tasks.',
        registers: [this.registry],
        collect() {
          this.set(gpus.pool.gpus.length);
        },
      });
      new Gauge({
        name: `${PREFIX}gpus_in_use`,
        help: 'GPUs held by running tasks.',
        registers: [this.registry],
        collect() {
          this.set(gpus.pool.inUse);
        },
      });
    }
    const folders = [{ folder: 'temp', path: env.tmpDir }];
    if (env.engine.info.graphRoot)
      folders.push({ folder: 'engine-storage', path: env.engine.info.graphRoot });
    new Gauge({
      name: `${PREFIX}disk_free_bytes`,
      help: "Free bytes on the filesystems the worker writes to: its temp folder and the engine's storage.",
      labelNames: ['folder'],
      registers: [this.registry],
      async collect() {
        await Promise.all(
          folders.map(async ({ folder, path }) => {
            // A folder that cannot be read has no sample rather than a wrong one.
            const bytes = await freeBytes(path).catch(() => undefined);
            if (bytes === undefined) this.remove({ folder });
            else this.set({ folder }, bytes);
          }),
        );
      },
    });
  }

  /** Subscribed nsqd connections, over both topics. */
  get nsqdConnectionCount(): number {
    return this.connected.learn.size + this.connected.predict.size;
  }

  taskStarted(kind: TaskKind): void {
    this.started.inc({ kind });
    this.inFlight.inc({ kind });
  }

  taskFinished(kind: TaskKind, outcome: MessageOutcome | 'error'): void {
    this.finished.inc({ kind, outcome });
    this.inFlight.dec({ kind });
    const reason = outcome === 'error' ? undefined : REQUEUED_BECAUSE[outcome];
    if (reason) this.requeues.inc({ kind, reason });
  }

  taskEvent(kind: TaskKind, event: TaskEvent): void {
    if (event.type === 'staged') {
      this.stagedIn.inc({ kind }, event.bytes);
      return;
    }
    if (event.type !== 'step-end') return;
    this.stepSeconds.observe({ kind, step: event.step }, event.ms / 1000);
    const role = BUILD_STEPS[event.step];
    if (role) {
      const cached = CACHED_NOTE.test(event.note ?? '');
      this.builds.inc({ role, result: cached ? 'hit' : 'built' });
      if (!cached) this.buildSeconds.observe({ role }, event.ms / 1000);
    }
    const uploaded = event.step === 'upload' ? UPLOAD_NOTE.exec(event.note ?? '') : null;
    if (uploaded) this.stagedOut.inc({ kind }, Number(uploaded[1]));
  }

  taskReport(report: TaskReport): void {
    const role = report.failedStep && BUILD_STEPS[report.failedStep];
    if (role) this.builds.inc({ role, result: 'failed' });
  }

  requeued(kind: TaskKind, reason: RequeueReason): void {
    this.requeues.inc({ kind, reason });
  }

  nsqdConnected(kind: TaskKind, address: string): void {
    this.connected[kind].add(address);
    this.nsqdConnections.set({ kind }, this.connected[kind].size);
  }

  nsqdClosed(kind: TaskKind, address: string): void {
    this.connected[kind].delete(address);
    this.nsqdConnections.set({ kind }, this.connected[kind].size);
  }

  /** The text a Prometheus scrape gets. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }
}
