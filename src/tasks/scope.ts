import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LABEL_RUN, LABEL_TASK, LABEL_WORKER } from '../engine/labels.js';
import type { SizedDisk } from '../engine/sized-disk.js';
import { releaseSizedDisks } from '../engine/sized-disk-release.js';
import type { IdMaps } from '../engine/types.js';
import type { HeldIdMap, UsernsPool } from '../engine/userns-pool.js';
import type { Logger } from '../log.js';
import type { TaskEnv } from './context.js';

/** Labels of everything one execution of one task creates: cleanup removes by them. */
export function taskLabels(env: TaskEnv, taskUuid: string, runId: string): Record<string, string> {
  return { [LABEL_WORKER]: env.workerId, [LABEL_TASK]: taskUuid, [LABEL_RUN]: runId };
}

/** What one execution of one task owns: its labels (for the engine) and a private folder. */
export interface TaskScope {
  runId: string;
  labels: Record<string, string>;
  /** Private (0700) folder for spooled files, removed when the task ends. */
  tmp: string;
  /** Releases of the images the task holds (see ImageCache.hold), called when it ends. */
  releases: Array<() => void>;
  /** The sized filesystem each bounded volume lives on (see createWritableVolumes), by volume name. */
  disks: Map<string, SizedDisk>;
  /** The host ids of the workflow's and of the submission's containers (--container-userns). */
  idMaps: TaskIdMaps;
}

/**
 * One user namespace for the workflow's containers and another for the submission's, taken
 * at the first container of each and held until the task's containers are removed: no
 * process or file of the one is the other's, nor another task's.
 */
export class TaskIdMaps {
  private readonly held = new Map<'workflow' | 'submission', Promise<HeldIdMap>>();

  constructor(private readonly pool: UsernsPool | undefined) {}

  async for(owner: 'workflow' | 'submission'): Promise<IdMaps | undefined> {
    if (!this.pool) return undefined;
    let taken = this.held.get(owner);
    if (!taken) {
      taken = this.pool.acquire();
      this.held.set(owner, taken);
    }
    return (await taken).map;
  }

  /** Only once the containers that had them are gone. */
  async release(): Promise<void> {
    const all = await Promise.allSettled(this.held.values());
    for (const one of all) if (one.status === 'fulfilled') one.value.release();
    this.held.clear();
  }
}

/**
 * Runs work inside a fresh scope, and whatever happens removes the scope's containers,
 * volumes and temp folder. Cleanup failures are logged, never hide the task's own error.
 * The image cache is trimmed by the caller, with trimImages, once the task is answered.
 */
export async function withTaskScope<T>(
  env: TaskEnv,
  taskUuid: string,
  log: Logger,
  work: (scope: TaskScope) => Promise<T>,
): Promise<T> {
  const runId = randomUUID();
  const tmp = await mkdtemp(join(env.tmpDir, 'compute-worker-task-'));
  const scope: TaskScope = {
    runId,
    labels: taskLabels(env, taskUuid, runId),
    tmp,
    releases: [],
    disks: new Map(),
    idMaps: new TaskIdMaps(env.userns),
  };
  try {
    return await work(scope);
  } finally {
    // Before the volumes go: podman cannot remove a volume whose folder is mounted over.
    await releaseSizedDisks(tmp).catch((error) =>
      log.error({ err: error, tmp }, 'could not release the sized filesystems of the task'),
    );
    try {
      // The run label alone: it is unique to this execution. With the worker's label too,
      // podman 4.3 (which ORs label filters) lists the volumes of the worker's other
      // running tasks, and one removed meanwhile makes the inspect, and so the cleanup, fail.
      await env.engine.removeByLabels({ [LABEL_RUN]: runId });
      // Only now: a container that still has its ids must not meet them in another's.
      await scope.idMaps.release();
    } catch (error) {
      log.error({ err: error, runId }, 'could not remove the containers and volumes of the task');
    }
    await rm(tmp, { recursive: true, force: true }).catch((error) =>
      log.error({ err: error, tmp }, 'could not remove the temp folder of the task'),
    );
    // The containers are gone: the task's images are free to go at the next trim.
    for (const release of scope.releases) release();
  }
}

/**
 * Brings the image cache back under its bound; a failure is logged, never the task's.
 * Called once a task is answered (the daemon's FIN or REQ, task exec's report), not
 * before: image listings and removals can take long on a busy engine, and nsqd should
 * not wait on the cache's housekeeping to hear the task's result.
 */
export async function trimImages(env: TaskEnv, log: Logger): Promise<void> {
  if (!env.imageCache) return;
  try {
    const result = await env.imageCache.trim();
    if (result.removed.length)
      log.info({ removed: result.removed }, 'image cache: removed the least recently used images');
    if (result.bytes > result.maxBytes) {
      log.warn(
        { bytes: result.bytes, maxBytes: result.maxBytes, kept: result.kept },
        'image cache: over its bound, the rest is in use',
      );
    }
  } catch (error) {
    log.warn({ err: error }, 'image cache: could not trim');
  }
}
