import { LABEL_RUN, LABEL_TASK, LABEL_VOLUME_ROLE, LABEL_WORKER } from '../engine/labels.js';
import type { TaskEnv } from './context.js';

/** Labels of everything one execution of one task creates: cleanup removes by them. */
export function taskLabels(env: TaskEnv, taskUuid: string, runId: string): Record<string, string> {
  return { [LABEL_WORKER]: env.workerId, [LABEL_TASK]: taskUuid, [LABEL_RUN]: runId };
}

/**
 * Creates one fresh volume per role, all at once; names are the engine's, never derived
 * from task data.
 */
export async function createVolumes<R extends string>(
  env: TaskEnv,
  labels: Record<string, string>,
  roles: readonly R[],
): Promise<Record<R, string>> {
  const names = await settleAll(
    roles.map((role) => env.engine.createVolume({ ...labels, [LABEL_VOLUME_ROLE]: role })),
  );
  return Object.fromEntries(roles.map((role, i) => [role, names[i]])) as Record<R, string>;
}

/**
 * Promise.all that waits for every promise before it throws the first failure: work still
 * in flight when the task's cleanup runs (a volume being created) would escape it.
 */
export async function settleAll<T extends readonly unknown[]>(
  work: readonly [...{ [K in keyof T]: Promise<T[K]> }],
): Promise<T> {
  const results: PromiseSettledResult<unknown>[] = await Promise.allSettled(work);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
