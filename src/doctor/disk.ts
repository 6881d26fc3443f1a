import { freeBytes, readableSize } from '../config/free-space.js';
import { formatSize } from '../config/size.js';
import { type Check, fail, pass, warn } from './check.js';

export interface DiskCheckOptions {
  /** --disk-limit: a task may write this much. */
  limitBytes: number;
  /** --min-free-disk: under this the daemon takes no new task. */
  minFreeBytes: number;
  /** The engine's storage (images, volumes), when the engine says where it is. */
  engineStorage?: string;
  /** The worker's temp folder (spooled blobs, packed models). */
  tmpDir: string;
}

/**
 * Free space where tasks write: below --disk-limit a single task may not fit (fail);
 * below --min-free-disk the daemon hands every message back (warn).
 */
export async function checkDisk(options: DiskCheckOptions): Promise<Check[]> {
  const folders = [
    ...(options.engineStorage
      ? [{ name: 'disk-engine-storage', path: options.engineStorage }]
      : []),
    { name: 'disk-temp-folder', path: options.tmpDir },
  ];
  return Promise.all(folders.map((folder) => checkFolder(options, folder)));
}

async function checkFolder(
  options: DiskCheckOptions,
  folder: { name: string; path: string },
): Promise<Check> {
  const { name } = folder;
  let free: number;
  try {
    free = await freeBytes(folder.path);
  } catch (error) {
    return fail(name, `cannot read the free space of ${folder.path}`, error);
  }
  const where = `${folder.path} has ${readableSize(free)} free`;
  if (free < options.limitBytes) {
    return fail(
      name,
      `${where}, less than --disk-limit ${formatSize(options.limitBytes)}: one task may not fit`,
      undefined,
      'free some space (podman system df shows what the engine holds), or lower --disk-limit',
    );
  }
  if (free < options.minFreeBytes) {
    return warn(
      name,
      `${where}, less than --min-free-disk ${formatSize(options.minFreeBytes)}: the daemon takes no task until there is room`,
      'free some space, or lower --min-free-disk',
    );
  }
  return pass(name, `${where} (--min-free-disk ${formatSize(options.minFreeBytes)})`);
}
