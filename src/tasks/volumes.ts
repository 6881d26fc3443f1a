import { LABEL_VOLUME_ROLE } from '../engine/labels.js';
import {
  bindVolume,
  createSizedDisk,
  type SizedDisk,
  settleBaseline,
  sizedDiskError,
  sizedDiskUnavailable,
} from '../engine/sized-disk.js';
import type { Engine } from '../engine/types.js';
import type { StepName, TaskEnv } from './context.js';
import type { TaskScope } from './scope.js';

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

/** Per engine: why its host gets only the poll (undefined: sized filesystems), asked once. */
const unavailable = new WeakMap<Engine, Promise<string | undefined>>();

/** Why the tasks of this worker are bounded by the poll only, or undefined where each writing step gets a sized filesystem. */
export function pollOnlyReason(env: TaskEnv): Promise<string | undefined> {
  if (env.diskBound === 'poll') return Promise.resolve('--disk-bound poll');
  let reason = unavailable.get(env.engine);
  if (!reason) {
    reason = sizedDiskUnavailable(env.engine.info);
    unavailable.set(env.engine, reason);
  }
  return reason;
}

/**
 * The volumes one container step writes, created like createVolumes and, where the host
 * allows it, put on one filesystem of --disk-limit made for them: the step's writes
 * together stop at the limit with "no space left on device". The steps' sets of writable
 * volumes do not overlap (detarget writes the submission's test folder, train its
 * predictions and model, perf the score), so one filesystem per writing step bounds
 * exactly what the limit says: what one step's writable volumes hold together. One per
 * volume would let the train step hold three times the limit; one per task would let the
 * workflow's detarget output use up the submission's share.
 * The disk is made while the images build; it is released with the task's scope.
 */
export async function createWritableVolumes<R extends string>(
  env: TaskEnv,
  scope: TaskScope,
  step: StepName,
  roles: readonly R[],
): Promise<Record<R, string>> {
  if (await pollOnlyReason(env)) return createVolumes(env, scope.labels, roles);
  const [names, disk] = await settleAll([
    createVolumes(env, scope.labels, roles),
    createSizedDisk(scope.tmp, `disk-${step}`, env.diskLimitBytes).catch((error: unknown) => {
      throw sizedDiskError(error);
    }),
  ]);
  await settleAll(roles.map((role) => bindOnDisk(env, disk, names[role])));
  await settleBaseline(disk);
  for (const role of roles) scope.disks.set(names[role], disk);
  return names;
}

async function bindOnDisk(env: TaskEnv, disk: SizedDisk, volume: string): Promise<void> {
  try {
    const hostDir = await env.engine.volumeMountpoint(volume);
    if (!hostDir) throw new Error(`the engine gives no host folder for volume ${volume}`);
    await bindVolume(disk, volume, hostDir);
  } catch (error) {
    throw sizedDiskError(error);
  }
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
