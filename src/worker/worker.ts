import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { formatDuration } from '../config/duration.js';
import { formatSize } from '../config/size.js';
import { workerVersion } from '../config/worker-version.js';
import { LABEL_WORKER } from '../engine/labels.js';
import { remoteEngineWarning } from '../engine/remote.js';
import { removeRunCgroupsOf } from '../engine/run-cgroup.js';
import { attachedLoops, releaseSizedDisks } from '../engine/sized-disk-release.js';
import type { Logger } from '../log.js';
import type { TaskEnv, TaskKind } from '../tasks/context.js';
import { sweepDataCache } from '../tasks/data-cache.js';
import type { RetryPolicy } from '../tasks/outcome.js';
import { trimImages } from '../tasks/scope.js';
import { removeDeadExecRuns } from './dead-runs.js';
import { DiskGate } from './disk-gate.js';
import type { Journal } from './journal.js';
import { LookupdWatch } from './lookupd-watch.js';
import type { WorkerRecorder } from './metrics.js';
import { type Lease, type NsqdInfo, openReader, type TopicReader } from './nsq-reader.js';
import { ServiceGate } from './service-gate.js';
import { daemonStatus, type WorkerStatus } from './status.js';
import { pruneTaskLogs, type TaskLogSettings } from './task-logs.js';
import { type MessageOutcome, runMessage } from './task-runner.js';

export const TOPICS: Record<TaskKind, string> = { learn: 'train', predict: 'prediction' };
export const CHANNEL = 'compute';
const HAND_BACK_DELAY_MS = 2_000;
/** How long a restart waits for the loop devices of a dead run's filesystems to be detached. */
const LOOP_WAIT_MS = 5_000;
/** How often kept task output older than --task-log-retention is removed (and at start). */
const TASK_LOG_PRUNE_MS = 3_600_000;
// A task this worker has not seen again for a week ran elsewhere, or is gone.
const INTERRUPTIONS_KEPT_MS = 7 * 24 * 3_600_000;

export interface WorkerOptions {
  env: TaskEnv;
  journal: Journal;
  log: Logger;
  retry: RetryPolicy;
  lookupdUrls: string[];
  nsqdAddresses: string[];
  parallelism: Record<TaskKind, number>;
  pollIntervalMs: number;
  shutdownGraceMs: number;
  heartbeatIntervalMs?: number;
  onOutcome?: (kind: TaskKind, outcome: MessageOutcome) => void;
  /** Where the worker's counters go (the metrics endpoint); none = not recorded. */
  metrics?: WorkerRecorder;
  /** The state folder, where killed `task exec` runs are found (see dead-runs.ts). */
  stateDir?: string;
  /** Each task's step output kept in the state folder (needs stateDir); none = not kept. */
  taskLogs?: TaskLogSettings;
  /** The pauses between probes of a service that is down (tests shorten them). */
  serviceProbeMs?: { firstProbeMs?: number; lastProbeMs?: number };
}

interface Running {
  controller: AbortController;
  done: Promise<unknown>;
}

/**
 * The daemon: one NSQ reader per topic, at most N tasks per topic at once, each message
 * kept in flight while its task runs, and a shutdown that hands unfinished work back.
 */
export class Worker {
  private readonly readers = new Map<TaskKind, TopicReader>();
  private readonly lookupd: LookupdWatch;
  private readonly running: Record<TaskKind, Set<Running>> = {
    learn: new Set(),
    predict: new Set(),
  };
  /**
   * Messages taken and not yet answered, per topic: what nsqd counts against RDY. A slot
   * frees when the message is answered, not when the task's promise settles: nsqd may
   * deliver the next message in between, and it must not be turned away (a hand-back
   * counts as an attempt).
   */
  private readonly busy: Record<TaskKind, number> = { learn: 0, predict: 0 };
  private draining = false;
  private stopped?: Promise<void>;
  private readonly disk: DiskGate;
  private readonly services: ServiceGate;
  private pruneTimer?: NodeJS.Timeout;

  constructor(private readonly options: WorkerOptions) {
    const { env, log } = options;
    const folders = [{ what: "the worker's temp folder", path: env.tmpDir }];
    if (env.engine.info.graphRoot)
      folders.unshift({ what: "the engine's storage", path: env.engine.info.graphRoot });
    this.disk = new DiskGate({ folders, minFreeBytes: env.minFreeDiskBytes, log });
    this.lookupd = new LookupdWatch(log, options.pollIntervalMs);
    this.services = new ServiceGate({
      probes: {
        storage: (signal) => env.storage.health(signal),
        orchestrator: async (signal) => {
          // It has no health call: any answer below 500 to a call that needs credentials.
          const answers = await env.orchestrator.credentialAnswers?.(signal);
          if (answers && answers.ours >= 500) throw new Error(`it answered HTTP ${answers.ours}`);
        },
      },
      log,
      onChange: (down) => {
        for (const reader of this.readers.values()) {
          if (down) reader.pause();
          else if (!this.draining) reader.resume();
        }
      },
      ...options.serviceProbeMs,
    });
  }

  /** The kinds of task it takes: a parallelism of 0 subscribes to nothing of that kind. */
  private get kinds(): TaskKind[] {
    return (['learn', 'predict'] as const).filter((kind) => this.options.parallelism[kind] > 0);
  }

  /** Why the worker takes no task now (a service down), or undefined. */
  get notTaking(): string | undefined {
    return this.services.reason;
  }

  /** Removes what a previous run left, then starts taking messages. */
  async start(): Promise<void> {
    const remote = remoteEngineWarning(this.options.env.engine.info);
    if (remote) this.options.log.warn(remote);
    await this.recover();
    await this.keepTaskLogsPruned();
    for (const kind of this.kinds) {
      const reader = openReader(
        {
          topic: TOPICS[kind],
          channel: CHANNEL,
          lookupdUrls: this.options.lookupdUrls,
          nsqdAddresses: this.options.nsqdAddresses,
          maxInFlight: this.options.parallelism[kind],
          pollIntervalMs: this.options.pollIntervalMs,
          heartbeatIntervalMs: this.options.heartbeatIntervalMs,
        },
        {
          onMessage: (lease) => this.accept(kind, lease),
          // One line, no stack: an nsqd that refuses connections is retried every poll.
          onError: (error, nsqd) =>
            this.options.log.warn(
              { topic: TOPICS[kind], ...(nsqd ? { nsqd } : {}) },
              nsqd ? `nsqd at ${nsqd}: ${error.message}` : `nsq: ${error.message}`,
            ),
          onNsqdReady: (info) => {
            this.options.metrics?.nsqdConnected(kind, info.address);
            this.checkNsqd(kind, info);
          },
          onNsqdClosed: (address, wasReady) => {
            this.options.metrics?.nsqdClosed(kind, address);
            if (wasReady)
              this.options.log.warn(
                { topic: TOPICS[kind], nsqd: address },
                'connection to nsqd closed; it will be tried again',
              );
          },
          onLookupd: (endpoint, error) => this.lookupd.saw(endpoint, error),
        },
      );
      this.readers.set(kind, reader);
      reader.connect();
    }
    this.options.log.info(
      {
        worker: this.options.env.workerId,
        version: workerVersion(),
        learnParallelism: this.options.parallelism.learn,
        predictParallelism: this.options.parallelism.predict,
        topics: this.kinds.map((kind) => TOPICS[kind]),
        nsqlookupd: this.options.lookupdUrls,
        nsqd: this.options.nsqdAddresses,
        shutdownGrace: formatDuration(this.options.shutdownGraceMs),
        limits: {
          memory: formatSize(this.options.env.limits.memoryBytes),
          cpus: this.options.env.limits.cpus,
          pidsLimit: this.options.env.limits.pidsLimit,
        },
      },
      'worker started',
    );
  }

  private accept(kind: TaskKind, lease: Lease): void {
    const log = this.options.log.child({ kind, message: lease.message.id });
    // A message can arrive beyond the limit (already in transit when RDY dropped, the
    // low-RDY rotation between several nsqd, or a new connection while a task of a lost
    // one still runs): hand it back without backoff. Draining, at once, for another
    // worker; otherwise after a pause, or the same connection would deliver it again at
    // once, over and over, until a slot frees.
    if (this.draining || this.busy[kind] >= this.options.parallelism[kind]) {
      log.debug('no free slot: message handed back');
      if (!lease.lost) {
        lease.message.requeue(this.draining ? 0 : HAND_BACK_DELAY_MS, false);
        this.options.metrics?.requeued(kind, this.draining ? 'draining' : 'no-free-slot');
      }
      lease.release();
      return;
    }
    this.busy[kind]++;
    lease.whenSettled(() => {
      this.busy[kind]--;
    });
    const controller = new AbortController();
    const entry: Running = { controller, done: Promise.resolve() };
    this.running[kind].add(entry);
    this.options.metrics?.taskStarted(kind);
    const takenAt = performance.now();
    const seconds = () => (performance.now() - takenAt) / 1000;
    const { stateDir, taskLogs } = this.options;
    entry.done = runMessage(
      {
        ...this.options,
        disk: this.disk,
        services: this.services,
        stopping: () => this.draining,
        taskLogs: stateDir && taskLogs ? { stateDir, maxBytes: taskLogs.maxBytes } : undefined,
      },
      kind,
      lease,
      controller.signal,
    )
      .then((outcome) => {
        this.options.metrics?.taskFinished(kind, outcome, seconds());
        this.options.onOutcome?.(kind, outcome);
      })
      .catch((error) => {
        this.options.metrics?.taskFinished(kind, 'error', seconds());
        log.error({ err: error }, 'unexpected error while running a message');
      })
      .finally(() => this.running[kind].delete(entry));
  }

  /** What it does now, for GET /status: its tasks in progress, and whether it takes more. */
  async status(nsqdConnections: number): Promise<WorkerStatus> {
    const why: string[] = [];
    if (this.draining) why.push('draining: stopping');
    if (nsqdConnections === 0) why.push('not connected to any nsqd');
    if (this.disk.short) why.push('low on disk space (--min-free-disk)');
    if (this.services.reason) why.push(this.services.reason);
    const full = this.kinds.filter((k) => this.busy[k] >= this.options.parallelism[k]);
    const taking = why.length === 0 && full.length < this.kinds.length;
    for (const kind of full) why.push(`every ${kind} slot is busy (${this.busy[kind]})`);
    const entries = await this.options.journal.list();
    return daemonStatus(this.options.env.workerId, this.draining, taking, why, entries);
  }

  /** Removes kept task output past its retention now, then every hour. */
  private async keepTaskLogsPruned(): Promise<void> {
    const { stateDir, taskLogs, log } = this.options;
    if (!stateDir || !taskLogs) return;
    const prune = async () => {
      const pruned = await pruneTaskLogs(stateDir, taskLogs.retentionMs);
      if (pruned.length)
        log.info({ tasks: pruned.length }, 'removed kept task output past --task-log-retention');
    };
    await prune();
    this.pruneTimer = setInterval(() => void prune(), TASK_LOG_PRUNE_MS);
    this.pruneTimer.unref();
  }

  private checkNsqd(kind: TaskKind, info: NsqdInfo): void {
    const { env, log } = this.options;
    log.info(
      {
        nsqd: info.address,
        topic: TOPICS[kind],
        msgTimeoutMs: info.msgTimeoutMs,
        maxMsgTimeoutMs: info.maxMsgTimeoutMs,
      },
      'connected to nsqd',
    );
    const timeout = kind === 'learn' ? env.learnTimeoutMs : env.predictTimeoutMs;
    if (info.maxMsgTimeoutMs > 0 && timeout > info.maxMsgTimeoutMs) {
      log.warn(
        { nsqd: info.address, topic: TOPICS[kind] },
        `${kind} tasks may run ${formatDuration(timeout)} (--${kind}-timeout), but nsqd at ${info.address} keeps a message in flight at most ${formatDuration(info.maxMsgTimeoutMs)}: a longer task is delivered again to another worker while it runs. Raise nsqd's --max-msg-timeout above ${formatDuration(timeout)}, or lower --${kind}-timeout.`,
      );
    }
  }

  /** Containers and volumes a crashed run left are removed; interrupted tasks are named. */
  private async recover(): Promise<void> {
    const { env, journal, log } = this.options;
    await journal.open();
    const { entries, unreadable } = await journal.takeLeftovers();
    await journal.pruneInterruptions(INTERRUPTIONS_KEPT_MS);
    for (const entry of entries) {
      const times = await journal.noteInterrupted(entry.taskUuid).catch(() => undefined);
      log.warn(
        {
          task: entry.taskUuid,
          kind: entry.kind,
          step: entry.step ?? 'claim',
          attempt: entry.attempts,
          startedAt: entry.startedAt,
          interruptions: times,
        },
        'a previous run was interrupted during this task; NSQ delivers it again',
      );
    }
    if (unreadable.length) log.warn({ files: unreadable }, 'unreadable journal entries removed');
    // Builds first: a build left running could otherwise still be writing.
    try {
      const orphans = await env.engine.removeOrphanBuilds(env.workerId);
      if (orphans.builds.length || orphans.containers.length || orphans.folders.length) {
        log.warn(orphans, 'stopped and removed the image builds left by a previous run');
      }
    } catch (error) {
      log.error({ err: error }, 'could not remove the image builds left by a previous run');
    }
    if (this.options.stateDir) await removeDeadExecRuns(this.options.stateDir, env.engine, log);
    // The sized filesystems of its tasks, before their volumes (mounted over) can be removed.
    try {
      const disks = await releaseSizedDisks(env.tmpDir);
      if (disks.mounts.length || disks.loops.length) {
        log.warn(disks, 'released the sized filesystems left by a previous run');
      }
    } catch (error) {
      log.error({ err: error }, 'could not release the sized filesystems left by a previous run');
    }
    const removed = await env.engine.removeByLabels({ [LABEL_WORKER]: env.workerId });
    // The host's data cache: what a staging killed with its worker left.
    await sweepDataCache(env, log);
    // The id ranges the previous run held are free with its containers gone.
    const freed = await env.userns?.sweep().catch((error: unknown) => {
      log.warn({ err: error }, 'could not give back the id ranges of dead workers');
      return 0;
    });
    if (freed) log.info({ ranges: freed }, 'gave back the id ranges of workers that died');
    // With its containers gone, the parent cgroups they were measured in are empty.
    await removeRunCgroupsOf(env.workerId);
    if (removed.containers.length || removed.volumes.length) {
      log.warn(removed, 'removed containers and volumes left by a previous run');
    }
    // Their containers were the last to use the filesystems released above.
    const held = await attachedLoops(env.tmpDir, LOOP_WAIT_MS).catch(() => [] as string[]);
    if (held.length) {
      log.error(
        { loops: held },
        'sized filesystems of a previous run are still in use by another mount namespace: their loop devices stay attached (see losetup -a and grep FILE /proc/*/mountinfo)',
      );
    }
    // The task temp folders of a killed run (spooled blobs, packed models).
    const folders = await readdir(env.tmpDir).catch(() => [] as string[]);
    await Promise.all(
      folders.map((name) => rm(join(env.tmpDir, name), { recursive: true, force: true })),
    );
    if (folders.length) log.warn({ folders }, 'removed temp folders left by a previous run');
    await trimImages(env, log);
  }

  get activeTasks(): number {
    return this.running.learn.size + this.running.predict.size;
  }

  /**
   * Stops taking messages, lets running tasks finish within the grace period, then
   * cancels the rest (their containers removed, their messages requeued at once), then
   * closes the connections. Safe to call twice; `now` skips the grace period.
   */
  stop(now = false): Promise<void> {
    if (now) this.cancelAll('second signal: stopping now');
    if (this.stopped) return this.stopped;
    this.draining = true;
    this.options.metrics?.drainingStarted();
    clearInterval(this.pruneTimer);
    this.stopped = this.drain(now);
    return this.stopped;
  }

  private async drain(now: boolean): Promise<void> {
    const { log, shutdownGraceMs } = this.options;
    for (const reader of this.readers.values()) reader.pause();
    const all = () => [...this.running.learn, ...this.running.predict].map((r) => r.done);
    if (!now && this.activeTasks > 0) {
      log.info(
        { tasks: this.activeTasks, graceMs: shutdownGraceMs },
        'waiting for running tasks to finish',
      );
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), shutdownGraceMs);
      });
      const result = await Promise.race([Promise.allSettled(all()), graceOver]);
      clearTimeout(timer);
      if (result === 'timeout') this.cancelAll('shutdown grace period over');
    }
    await Promise.allSettled(all());
    for (const reader of this.readers.values()) reader.close();
    this.services.close();
    log.info('worker stopped');
  }

  private cancelAll(reason: string): void {
    const tasks = [...this.running.learn, ...this.running.predict];
    if (tasks.length)
      this.options.log.warn({ tasks: tasks.length }, `cancelling running tasks: ${reason}`);
    for (const task of tasks) task.controller.abort(new Error(reason));
  }
}
