import type { GpuDevices } from '../engine/types.js';
import type { Gpu } from '../gpu/discover.js';
import type { GpuLease } from '../gpu/pool.js';
import type { TaskEnv, TaskKind, TaskRun } from './context.js';

const NONE: GpuLease = { gpus: [], release: () => {} };

/**
 * The GPUs one task holds from before its first container until its containers are
 * removed: the caller releases the lease once executeTask has returned.
 */
export function acquireTaskGpus(env: TaskEnv, kind: TaskKind): GpuLease {
  const count = env.gpus ? env.gpus[kind] : 0;
  return env.gpus && count > 0 ? env.gpus.pool.acquire(count) : NONE;
}

/** What the submission's container is given: the task's GPUs, by UUID. */
export function submissionGpus(env: TaskEnv, run: TaskRun): GpuDevices | undefined {
  if (!env.gpus || !run.gpus?.length) return undefined;
  return { kind: env.gpus.cdiKind, uuids: run.gpus.map((g) => g.uuid) };
}

export function gpuNames(gpus: readonly Gpu[] | undefined): string[] | undefined {
  return gpus?.length ? gpus.map((g) => `${g.index}:${g.uuid}`) : undefined;
}
