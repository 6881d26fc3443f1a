import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where the worker keeps its id, its journal and the local services' files. */
export function defaultStateDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/compute-worker';
  const base = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'compute-worker');
}

/**
 * Parent of one worker's private per-task temp folders. One folder per worker id (and a
 * worker id belongs to one locked state folder), so a restart after a crash can remove
 * what the crashed run left, and only that.
 */
export function workerTmpDir(workerId: string): string {
  return join(tmpdir(), `compute-worker-${workerId}`);
}
