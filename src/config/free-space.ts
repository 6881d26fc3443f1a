import { statfs } from 'node:fs/promises';

/** Free space of the filesystem that holds one of the worker's folders. */
export interface FreeSpace {
  /** What the folder is, for a person: "the engine's storage", "the worker's temp folder". */
  what: string;
  path: string;
  freeBytes: number;
}

/** Bytes an unprivileged writer can still use on the filesystem of `path` (root's reserve left out). */
export async function freeBytes(path: string): Promise<number> {
  const info = await statfs(path);
  return info.bavail * info.bsize;
}

/**
 * Two folders on one filesystem, read a moment apart, differ by what was written meanwhile:
 * within this share the first named one (the engine's storage) is the one reported.
 */
const SAME_SPACE_SHARE = 0.01;

/** The folder with the least free space below `minFreeBytes`, or undefined when all have enough. */
export function lowestBelow(
  readings: readonly FreeSpace[],
  minFreeBytes: number,
): FreeSpace | undefined {
  let lowest: FreeSpace | undefined;
  for (const reading of readings) {
    if (reading.freeBytes >= minFreeBytes) continue;
    if (!lowest || reading.freeBytes < lowest.freeBytes * (1 - SAME_SPACE_SHARE)) lowest = reading;
  }
  return lowest;
}

/** Bytes as a person reads them: 1.5 GiB, 300.0 MiB. */
export function readableSize(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}
