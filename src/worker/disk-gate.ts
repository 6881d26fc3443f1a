import { type FreeSpace, freeBytes, lowestBelow, readableSize } from '../config/free-space.js';
import { formatSize } from '../config/size.js';
import type { Logger } from '../log.js';

/** How long a message waits in NSQ when this worker has no room for it. */
export const LOW_DISK_DELAY_MS = 30_000;

export interface DiskGateOptions {
  /** The folders whose filesystems must keep room: the engine's storage, the worker's temp folder. */
  folders: { what: string; path: string }[];
  minFreeBytes: number;
  log: Logger;
}

/**
 * Decides, before a task is claimed, whether this host has room for it. A task may fill
 * --disk-limit of the engine's storage, and spools blobs into the temp folder: under
 * --min-free-disk the worker takes nothing new. Logged once when the disk runs low and
 * once when there is room again, not once per message.
 */
export class DiskGate {
  private low = false;
  private readonly unreadable = new Set<string>();

  constructor(private readonly options: DiskGateOptions) {}

  /** The last check found a folder short of space. */
  get short(): boolean {
    return this.low;
  }

  /** The folder that is short of space, or undefined when a task may start. */
  async check(): Promise<FreeSpace | undefined> {
    const { folders, minFreeBytes, log } = this.options;
    if (minFreeBytes <= 0) return undefined;
    const readings: FreeSpace[] = [];
    for (const folder of folders) {
      try {
        readings.push({ ...folder, freeBytes: await freeBytes(folder.path) });
      } catch (error) {
        // A remote engine's storage is not on this host: nothing to measure here.
        if (!this.unreadable.has(folder.path)) {
          this.unreadable.add(folder.path);
          log.warn(
            { path: folder.path, err: error },
            `cannot read the free space of ${folder.what} ${folder.path}: --min-free-disk is not checked there`,
          );
        }
      }
    }
    const short = lowestBelow(readings, minFreeBytes);
    if (short && !this.low) {
      log.warn(
        { path: short.path, freeBytes: short.freeBytes, minFreeBytes },
        `not taking tasks: ${short.what} ${short.path} has ${readableSize(short.freeBytes)} free, less than --min-free-disk ${formatSize(minFreeBytes)}; messages go back to NSQ until there is room`,
      );
    } else if (!short && this.low) {
      log.info(
        { minFreeBytes },
        'free disk space is back above --min-free-disk: taking tasks again',
      );
    }
    this.low = short !== undefined;
    return short;
  }
}
