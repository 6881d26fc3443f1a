import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { SERVICE_ERROR_KINDS, type ServiceName } from '../clients/http.js';
import { freeBytes } from '../config/free-space.js';
import { workerVersion } from '../config/worker-version.js';
import type { DataSetSource, StepName, TaskEnv, TaskEvent, TaskKind } from '../tasks/context.js';
import type { TaskReport } from '../tasks/run-task.js';

/**
 * How a message ended, for the worker's counters and the tests' assertions. `outage`: handed
 * back unrun or unfinished because storage or the orchestrator is down.
 */
export const MESSAGE_OUTCOMES = [
  'done',
  'failed',
  'requeued',
  'taken-elsewhere',
  'invalid',
  'cancelled',
  'lease-lost',
  'low-disk',
  'outage',
] as const;

export type MessageOutcome = (typeof MESSAGE_OUTCOMES)[number];

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
  /**
   * The message's task ended ('error': the worker itself failed unexpectedly), `seconds`
   * after its message was taken.
   */
  taskFinished(kind: TaskKind, outcome: MessageOutcome | 'error', seconds?: number): void;
  taskEvent(kind: TaskKind, event: TaskEvent): void;
  /** How the task ran, before its message is answered. */
  taskReport(report: TaskReport): void;
  /** A message handed back without running (the requeues of taskFinished are counted there). */
  requeued(kind: TaskKind, reason: RequeueReason): void;
  nsqdConnected(kind: TaskKind, address: string): void;
  nsqdClosed(kind: TaskKind, address: string): void;
  /** The worker stopped taking tasks, to stop. */
  drainingStarted(): void;
  /** A call to a service failed by the service's doing (see clients/http.ts's onError). */
  serviceError(service: ServiceName, code: string): void;
}

const PREFIX = 'compute_worker_';
const KINDS: readonly TaskKind[] = ['learn', 'predict'];
const OUTCOMES: readonly (MessageOutcome | 'error')[] = [...MESSAGE_OUTCOMES, 'error'];
const SERVICES: readonly ServiceName[] = ['storage', 'orchestrator'];
const DATA_SET_SOURCES: readonly DataSetSource[] = ['cache', 'staged-into-cache', 'staged'];
/** A failed build step that failed for these reasons is no failed build: nothing was built. */
const NOT_A_BUILD_FAILURE = new Set(['STORAGE_FAILED', 'ORCHESTRATOR_FAILED', 'CANCELLED']);
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
  private readonly dataSets = new Counter({
    name: `${PREFIX}data_sets_total`,
    help: "Data sets a task mounted, by task kind and source: the host's data cache, staged into it, or staged for the task alone.",
    labelNames: ['kind', 'source'],
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
  private readonly taskSeconds = new Histogram({
    name: `${PREFIX}task_duration_seconds`,
    help: 'Time from taking a message to answering it, by task kind and outcome (as tasks_finished_total).',
    labelNames: ['kind', 'outcome'],
    buckets: [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14_400, 43_200],
    registers: [this.registry],
  });
  private readonly taskCpuSeconds = new Histogram({
    name: `${PREFIX}task_cpu_seconds`,
    help: "CPU time of a task's containers, all steps together (from their cgroups), by task kind.",
    labelNames: ['kind'],
    buckets: [0.1, 1, 10, 60, 300, 900, 3600, 14_400, 43_200],
    registers: [this.registry],
  });
  private readonly taskPeakMemory = new Histogram({
    name: `${PREFIX}task_peak_memory_bytes`,
    help: "Highest peak memory of a task's containers (from their cgroups), by task kind.",
    labelNames: ['kind'],
    buckets: [16, 64, 256, 1024, 4096, 16_384, 65_536].map((mib) => mib * 1024 * 1024),
    registers: [this.registry],
  });
  private readonly taskGpuSeconds = new Histogram({
    name: `${PREFIX}task_gpu_seconds`,
    help: "GPU busy time of a task's GPUs (nvidia-smi utilization), all steps together, by task kind; tasks with GPUs only.",
    labelNames: ['kind'],
    buckets: [1, 10, 60, 300, 900, 3600, 14_400, 43_200],
    registers: [this.registry],
  });
  private readonly serviceErrors = new Counter({
    name: `${PREFIX}service_errors_total`,
    help: 'Failed calls (each try) to storage and the orchestrator, by service and code: the HTTP status answered, or connection, timeout, tls, bad_answer.',
    labelNames: ['service', 'code'],
    registers: [this.registry],
  });
  private readonly draining = new Gauge({
    name: `${PREFIX}draining`,
    help: '1 once the worker stops taking tasks to stop (a signal), else 0.',
    registers: [this.registry],
  });

  constructor(env?: Pick<TaskEnv, 'gpus' | 'tmpDir' | 'engine' | 'imageCache'>) {
    // The process's CPU, memory, file descriptors, event loop lag and GC, under their usual names.
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: `${PREFIX}build_info`,
      help: 'Always 1: the worker version and the engine it drives.',
      labelNames: ['version', 'engine', 'engine_version'],
      registers: [this.registry],
    }).set(
      {
        version: workerVersion(),
        engine: env?.engine.info.name ?? 'none',
        engine_version: env?.engine.info.version ?? '',
      },
      1,
    );
    this.draining.set(0);
    for (const kind of KINDS) {
      this.inFlight.set({ kind }, 0);
      this.nsqdConnections.set({ kind }, 0);
      this.started.inc({ kind }, 0);
      for (const outcome of OUTCOMES) {
        this.finished.inc({ kind, outcome }, 0);
        this.taskSeconds.zero({ kind, outcome });
      }
      this.taskCpuSeconds.zero({ kind });
      this.taskPeakMemory.zero({ kind });
      for (const source of DATA_SET_SOURCES) this.dataSets.inc({ kind, source }, 0);
    }
    for (const service of SERVICES)
      for (const code of SERVICE_ERROR_KINDS) this.serviceErrors.inc({ service, code }, 0);
    if (!env) return;
    const cache = env.imageCache;
    if (cache) {
      new Gauge({
        name: `${PREFIX}image_cache_bytes`,
        help: 'Bytes of the images this worker built and keeps (as of the last trim, after each task and at start), bounded by --image-cache-size.',
        registers: [this.registry],
        collect() {
          if (cache.lastSummary) this.set(cache.lastSummary.bytes);
        },
      });
      new Gauge({
        name: `${PREFIX}image_cache_images`,
        help: 'Images this worker built and keeps (as of the last trim).',
        registers: [this.registry],
        collect() {
          if (cache.lastSummary) this.set(cache.lastSummary.images);
        },
      });
    }
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

  taskFinished(kind: TaskKind, outcome: MessageOutcome | 'error', seconds?: number): void {
    this.finished.inc({ kind, outcome });
    if (seconds !== undefined) this.taskSeconds.observe({ kind, outcome }, seconds);
    this.inFlight.dec({ kind });
    const reason = outcome === 'error' ? undefined : REQUEUED_BECAUSE[outcome];
    if (reason) this.requeues.inc({ kind, reason });
  }

  taskEvent(kind: TaskKind, event: TaskEvent): void {
    if (event.type === 'staged') {
      this.stagedIn.inc({ kind }, event.bytes);
      return;
    }
    if (event.type === 'data-set') {
      this.dataSets.inc({ kind, source: event.source });
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
    // A build whose context could not be downloaded (storage down) failed no build.
    if (role && !NOT_A_BUILD_FAILURE.has(report.error?.code ?? ''))
      this.builds.inc({ role, result: 'failed' });
    const steps = Object.values(report.usage ?? {});
    const cpu = steps.map((s) => s.cpu_s).filter((v) => v !== undefined);
    const memory = steps.map((s) => s.peak_memory_bytes).filter((v) => v !== undefined);
    const gpu = steps.flatMap((s) => s.gpus ?? []).map((g) => g.busy_s);
    const kind = report.kind;
    // A figure the host could not measure is not observed as a zero.
    if (cpu.length) this.taskCpuSeconds.observe({ kind }, sum(cpu));
    if (memory.length) this.taskPeakMemory.observe({ kind }, Math.max(...memory));
    if (gpu.length && gpu.every((v) => v !== undefined))
      this.taskGpuSeconds.observe({ kind }, sum(gpu));
  }

  drainingStarted(): void {
    this.draining.set(1);
  }

  serviceError(service: ServiceName, code: string): void {
    this.serviceErrors.inc({ service, code });
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

function sum(values: readonly number[]): number {
  return values.reduce((total, v) => total + v, 0);
}
