import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where the worker keeps its id, its journal and the local services' files. */
export function defaultStateDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/compute-worker';
  const base = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'compute-worker');
}

/** The host's staged data cache, shared by its workers (one folder per user). */
export function defaultDataCacheDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/compute-worker/data-cache';
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'compute-worker', 'data-cache');
}

/**
 * Parent of one worker's private per-task temp folders. One folder per worker id (and a
 * worker id belongs to one locked state folder), so a restart after a crash can remove
 * what the crashed run left, and only that.
 */
export function workerTmpDir(workerId: string): string {
  return join(tmpdir(), `compute-worker-${workerId}`);
}

/**
 * Beside the temp folder (which a restart empties), the lock a worker holds for its whole
 * life under its id: doctor tells a live worker's containers from a dead one's by it.
 */
export function workerLiveDir(workerId: string): string {
  return `${workerTmpDir(workerId)}.live`;
}

/**
 * One folder per running `task exec` on a state folder, named by its worker id and holding
 * its lock, so that the next command on the folder finds what a killed one left.
 */
export function execRunsDir(stateDir: string): string {
  return join(stateDir, 'exec');
}

/** In a task exec's run folder: the path of its temp folder (TMPDIR can differ between commands). */
export const RUN_TMP_FILE = 'tmp-dir';
