import { readableSize } from '../config/free-space.js';
import { formatSize } from '../config/size.js';
import { type SizedDisk, sizedDiskUsage } from '../engine/sized-disk.js';
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
 * aborts the step once they hold more than --disk-limit together. Where they live on a
 * sized filesystem of their own (`disks`, see createWritableVolumes), that filesystem is
 * the bound and a measure is one statfs: the watch then only tells a full filesystem
 * (the writer got "no space left on device") from any other failure. Elsewhere engine
 * volumes have no quota and the walk is the bound, with a lag of one poll plus one walk.
 */
export function watchDisk(
  env: TaskEnv,
  run: TaskRun,
  step: StepName,
  mounts: readonly VolumeMount[],
  /** Who runs, for the message: "the submission's train step". */
  who = `the ${step} step`,
  disks?: ReadonlyMap<string, SizedDisk>,
): DiskWatch {
  const limit = new AbortController();
  const signal = AbortSignal.any([run.signal, limit.signal]);
  const volumes = [...new Set(mounts.filter((m) => !m.readOnly).map((m) => m.volume))];
  let exceeded: Exceeded | undefined;
  let stopped = false;
  let wake: (() => void) | undefined;
  let first: number | undefined;
  let last: number | undefined;

  const disk = oneDisk(volumes, disks);
  const paths = disk ? Promise.resolve([]) : resolvePaths(env, run, step, volumes);
  const measure = async (): Promise<void> => {
    if (disk) {
      if (exceeded) return;
      const usage = await sizedDiskUsage(disk).catch(() => undefined); // unmounted at the end
      if (usage && (usage.bytes > env.diskLimitBytes || usage.full)) {
        exceeded = {
          bytes: usage.bytes,
          files: usage.files,
          truncated: usage.outOfFiles,
          full: usage.full,
        };
        limit.abort(new Error('disk limit'));
      }
      if (usage) {
        first ??= usage.bytes;
        last = usage.bytes;
      }
      return;
    }
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
        exceeded = { bytes, files, truncated: usage.truncated, full: false };
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

interface Exceeded {
  bytes: number;
  files: number;
  /** Too many files: the walk stopped at DISK_MAX_ENTRIES, or the filesystem has no inode left. */
  truncated: boolean;
  /** The step's sized filesystem is full: it held the writer at its size. */
  full: boolean;
}

/** The sized filesystem all of the step's writable volumes are on, if they are on one. */
function oneDisk(
  volumes: readonly string[],
  disks: ReadonlyMap<string, SizedDisk> | undefined,
): SizedDisk | undefined {
  const found = new Set(volumes.map((volume) => disks?.get(volume)));
  const [only] = found;
  return found.size === 1 ? only : undefined;
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

function diskLimitError(env: TaskEnv, who: string, seen: Exceeded): WorkerError {
  const limit = formatSize(env.diskLimitBytes);
  if (seen.full) {
    // The filesystem held the writer: it did not get past the limit, it reached it.
    const what = seen.truncated
      ? `${seen.files} files, all its filesystem has room for`
      : `${readableSize(seen.bytes)} (${seen.bytes} bytes), all the --disk-limit of ${limit} allows`;
    return new WorkerError(
      'DISK_LIMIT',
      `${who} filled its writable volumes with ${what}: writing more failed with "no space left on device"`,
      { hint: 'the operator can raise it with --disk-limit' },
    );
  }
  const what = seen.truncated
    ? `more than ${DISK_MAX_ENTRIES} files`
    : `${readableSize(seen.bytes)} (${seen.bytes} bytes)`;
  return new WorkerError(
    'DISK_LIMIT',
    `${who} filled its writable volumes with ${what}, past the --disk-limit of ${limit}: it was stopped`,
    { hint: 'the operator can raise it with --disk-limit' },
  );
}
