import { readableSize } from '../config/free-space.js';
import { formatSize } from '../config/size.js';
import type { Engine, VolumeMount } from '../engine/types.js';
import { WorkerError } from '../errors.js';
import type { StepName, TaskEnv, TaskRun } from './context.js';

/** How often the writable volumes of a running container are measured. */
export const DISK_POLL_MS = 2_000;
/** A walk stops after this many entries: its cost stays bounded, and so many files is over anyway. */
export const DISK_MAX_ENTRIES = 1_000_000;

/** Engines whose volumes could not be measured, already warned about: a warning once, not per step. */
const warned = new WeakSet<Engine>();

export interface DiskWatch {
  /** Aborted when the container must stop: the run's own signal, or the limit passed. */
  signal: AbortSignal;
  /** Resolves once the volumes were measured before the container writes to them. */
  ready: Promise<void>;
  /**
   * Bytes the writable volumes grew by while the step ran, once stop() returned; undefined
   * where they cannot be measured or the limit cut the walk short.
   */
  written(): number | undefined;
  /**
   * Stops watching and measures once more (a fast writer may have finished between two
   * polls); the error to fail the step with when the limit was passed, else undefined.
   */
  stop(): Promise<WorkerError | undefined>;
}

/**
 * Measures the volumes a container step can write, every DISK_POLL_MS while it runs, and
 * aborts the step once they hold more than --disk-limit together. Engine volumes have no
 * quota on an ordinary filesystem: this is the bound. Its lag is one poll plus one walk.
 */
export function watchDisk(
  env: TaskEnv,
  run: TaskRun,
  step: StepName,
  mounts: readonly VolumeMount[],
  /** Who runs, for the message: "the submission's train step". */
  who = `the ${step} step`,
): DiskWatch {
  const limit = new AbortController();
  const signal = AbortSignal.any([run.signal, limit.signal]);
  const volumes = [...new Set(mounts.filter((m) => !m.readOnly).map((m) => m.volume))];
  let exceeded: { bytes: number; files: number; truncated: boolean } | undefined;
  let stopped = false;
  let wake: (() => void) | undefined;
  let first: number | undefined;
  let last: number | undefined;

  const paths = resolvePaths(env, run, step, volumes);
  const measure = async (): Promise<void> => {
    const found = await paths;
    if (found.length === 0 || exceeded) return;
    let bytes = 0;
    let files = 0;
    for (const path of found) {
      const usage = await env.engine
        .measureVolume(path, {
          maxEntries: DISK_MAX_ENTRIES - files,
          stopAtBytes: env.diskLimitBytes - bytes,
        })
        .catch(() => undefined); // removed at the very end of the step, or unreadable now
      if (!usage) continue;
      bytes += usage.bytes;
      files += usage.entries;
      if (bytes > env.diskLimitBytes || usage.truncated) {
        exceeded = { bytes, files, truncated: usage.truncated };
        limit.abort(new Error('disk limit'));
        return;
      }
    }
    first ??= bytes;
    last = bytes;
  };

  const sleepOrWake = () =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, DISK_POLL_MS);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  const ready = measure();
  const loop = (async () => {
    await ready;
    while (!stopped && !signal.aborted) {
      await sleepOrWake();
      if (stopped || signal.aborted) break;
      await measure();
    }
  })();
  return {
    signal,
    ready,
    written: () =>
      exceeded || first === undefined || last === undefined ? undefined : Math.max(0, last - first),
    async stop() {
      stopped = true;
      wake?.();
      await loop;
      if (!run.signal.aborted) await measure();
      if (!exceeded) return undefined;
      return diskLimitError(env, who, exceeded);
    },
  };
}

/** Host folders of the volumes, looked up once; a volume that cannot be read is warned about and skipped. */
async function resolvePaths(
  env: TaskEnv,
  run: TaskRun,
  step: StepName,
  volumes: string[],
): Promise<string[]> {
  const paths: string[] = [];
  // A remote engine's volumes are on its host: said once at start-up (engine/remote.ts).
  if (env.engine.info.engineHost) return paths;
  for (const volume of volumes) {
    try {
      const path = await env.engine.volumeMountpoint(volume);
      if (!path) throw new Error('the engine gives no host folder');
      await env.engine.measureVolume(path, { maxEntries: 1 });
      paths.push(path);
    } catch (error) {
      if (!warned.has(env.engine)) {
        warned.add(env.engine);
        run.onEvent?.({
          type: 'warning',
          step,
          message: `--disk-limit is not enforced: the host folder of volume ${volume} cannot be read (${(error as Error).message}); a remote engine, or one whose storage this user cannot read`,
        });
      }
    }
  }
  return paths;
}

function diskLimitError(
  env: TaskEnv,
  who: string,
  seen: { bytes: number; files: number; truncated: boolean },
): WorkerError {
  const limit = formatSize(env.diskLimitBytes);
  const what = seen.truncated
    ? `more than ${DISK_MAX_ENTRIES} files`
    : `${readableSize(seen.bytes)} (${seen.bytes} bytes)`;
  return new WorkerError(
    'DISK_LIMIT',
    `${who} filled its writable volumes with ${what}, past the --disk-limit of ${limit}: it was stopped`,
    { hint: 'the operator can raise it with --disk-limit' },
  );
}
