/**
 * Every label the worker puts on what it creates, in one place: cleanup, crash recovery
 * and the tests find containers, volumes and images by them.
 */

/** On every container, volume and image of the worker. */
export const LABEL_MANAGED = 'compute-worker.managed';
/** The worker process's id: crash recovery removes what its dead predecessor left. */
export const LABEL_WORKER = 'compute-worker.worker';
/** The task's uuid. */
export const LABEL_TASK = 'compute-worker.task';
/** One execution of one task: a task's cleanup removes by this label alone. */
export const LABEL_RUN = 'compute-worker.run';
/** What a volume holds for the task (train, model, testPred, ...). */
export const LABEL_VOLUME_ROLE = 'compute-worker.volume';
/** The step a container runs (detarget, train, perf, predict). */
export const LABEL_STEP = 'compute-worker.step';
/**
 * The worker id on the images a worker builds: its image cache finds them by it. Not
 * LABEL_WORKER: a container inherits its image's labels, and a container of another worker
 * started from this image must not look like this worker's to its cleanup.
 */
export const LABEL_BUILT_BY = 'compute-worker.built-by';
/** The first host uid of a container's own user namespace (userns-pool.ts). */
export const LABEL_USERNS = 'compute-worker.userns';
/**
 * On a volume of the host's staged data cache, its key (tasks/data-cache.ts). Such a
 * volume carries neither LABEL_WORKER nor LABEL_RUN: no task's or worker's cleanup finds
 * it, only the cache removes it.
 */
export const LABEL_DATA_CACHE = 'compute-worker.data-cache';
/** On a data cache volume, which cache folder it belongs to (hashed): a sweep sees only its own. */
export const LABEL_DATA_CACHE_DIR = 'compute-worker.data-cache-dir';
