import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { dirname } from 'node:path';
import { formatSize } from '../config/size.js';
import { LABEL_DATA_CACHE } from '../engine/labels.js';
import type { Engine } from '../engine/types.js';
import { cacheDirLabel } from '../tasks/data-cache.js';
import { readEntries, stagingNow } from '../tasks/data-cache-index.js';
import { type Check, fail, pass, skip, warn } from './check.js';
import { readableBytes } from './image-cache.js';

const NAME = 'data-cache';

/**
 * The host's data cache against --data-cache-size: its sets and their bytes, and whether
 * the engine still holds their volumes. Read only: doctor removes nothing.
 */
export async function dataCacheCheck(
  engine: Engine | undefined,
  cache: { dir: string; maxBytes: number } | undefined,
): Promise<Check> {
  if (!cache) return skip(NAME, 'off (--data-cache-size 0): every task stages its data itself');
  try {
    await access(cache.dir, constants.W_OK | constants.X_OK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && (await canMake(cache.dir))) {
      return pass(NAME, `${cache.dir}: empty, made when the worker starts`);
    }
    return fail(
      NAME,
      `the data cache folder ${cache.dir} is not writable`,
      error,
      'pass --data-cache-dir with a folder this user can write, or --data-cache-size 0',
    );
  }
  if (!engine) return skip(NAME, `${cache.dir}: no engine to hold its volumes`);
  try {
    const [entries, volumes] = await Promise.all([
      readEntries(cache.dir),
      engine.listVolumes(cacheDirLabel(cache.dir)),
    ]);
    const held = new Set(volumes.map((v) => v.name));
    const sets = entries.filter((e) => e.complete && !e.superseded);
    const bytes = sets.reduce((sum, e) => sum + e.bytes, 0);
    const count = `${sets.length} set${sets.length === 1 ? '' : 's'}`;
    const message = `${cache.dir}: ${count}, ${readableBytes(bytes)} of ${formatSize(cache.maxBytes)}`;
    const lost = sets.filter((e) => !held.has(e.volume)).length;
    if (lost > 0) {
      return warn(
        NAME,
        `${message}; the volumes of ${lost} of them are gone from the engine`,
        'a task that needs such a set stages it again; removing cw-data-* volumes by hand empties the cache',
      );
    }
    // Left by a staging that was killed: an unfinished set, or a volume without its entry.
    const known = new Set(entries.map((e) => e.volume));
    const keys = [
      ...entries.filter((e) => !e.complete).map((e) => e.key),
      ...volumes.filter((v) => !known.has(v.name)).map((v) => v.labels[LABEL_DATA_CACHE] ?? ''),
    ];
    const live = await Promise.all(
      keys.map((key) => (/^[0-9a-f]{64}$/.test(key) ? stagingNow(cache.dir, key) : false)),
    );
    const dead = live.filter((staging) => !staging).length;
    if (dead > 0) {
      return warn(
        NAME,
        `${message}; ${dead} unfinished set${dead === 1 ? '' : 's'} of killed stagings`,
        'the next start of the worker, or the next staging, removes them',
      );
    }
    if (bytes > cache.maxBytes) {
      return warn(
        NAME,
        `${message}: over its bound`,
        'the least recently used sets that no task mounts are removed as the next task stages one',
      );
    }
    return pass(NAME, message);
  } catch (error) {
    return warn(NAME, `${cache.dir} cannot be read: ${(error as Error).message}`);
  }
}

/** Whether the nearest folder above `dir` that exists lets this user make it. */
async function canMake(dir: string): Promise<boolean> {
  for (let parent = dirname(dir); ; parent = dirname(parent)) {
    try {
      await access(parent, constants.F_OK);
    } catch {
      if (parent === '/') return false;
      continue;
    }
    return access(parent, constants.W_OK | constants.X_OK).then(
      () => true,
      () => false,
    );
  }
}
