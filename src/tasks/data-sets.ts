import type { TaskEnv, TaskRun } from './context.js';
import { cachedDataSet, type DataSet } from './data-cache.js';
import type { TaskScope } from './scope.js';
import { stageFiles } from './staging.js';
import { createVolumes } from './volumes.js';

/** A data volume of the task: its own, or a cached one that other tasks mount too. */
export interface DataVolume {
  volume: string;
  /** Bytes fetched from storage for it. */
  fetched: number;
  /** From the host's data cache: mounted read-only and never given to a container's ids. */
  shared: boolean;
  reused: boolean;
}

/**
 * The volume of a data set, from the host's data cache where it keeps the set, else a
 * fresh volume of the task's (its labels, removed with it) staged as before.
 */
export async function stageDataSet(
  env: TaskEnv,
  run: TaskRun,
  scope: TaskScope,
  role: string,
  set: DataSet,
): Promise<DataVolume> {
  const cached = await cachedDataSet(env, run, scope, set);
  const source = !cached ? 'staged' : cached.reused ? 'cache' : 'staged-into-cache';
  run.onEvent?.({ type: 'data-set', set: role, source });
  if (cached) return { ...cached, shared: true };
  const { [role]: volume } = await createVolumes(env, scope.labels, [role]);
  const files = set.uuids.map((uuid) => ({ kind: 'data' as const, uuid, name: uuid }));
  const staged = await stageFiles(env, run, volume as string, files, {
    tmp: scope.tmp,
    dirs: [...set.dirs],
  });
  return { volume: volume as string, fetched: staged.bytes, shared: false, reused: false };
}

/** The step's note on what it staged, naming the sets the cache already had. */
export function stagedNote(bytes: number, sets: Record<string, DataVolume>): string {
  const reused = Object.entries(sets).flatMap(([name, set]) => (set.reused ? [name] : []));
  return reused.length ? `${bytes} bytes (cached: ${reused.join(', ')})` : `${bytes} bytes`;
}
