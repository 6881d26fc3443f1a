import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, isAbsolute, join } from 'node:path';
import { execRunsDir, RUN_TMP_FILE, workerTmpDir } from '../config/paths.js';
import { lockHolder, lockStateDir } from '../config/state-lock.js';
import { LABEL_WORKER } from '../engine/labels.js';
import { removeRunCgroupsOf } from '../engine/run-cgroup.js';
import { releaseSizedDisks } from '../engine/sized-disk-release.js';
import type { Engine } from '../engine/types.js';
import type { Logger } from '../log.js';

/** A run folder without a lock this young belongs to a `task exec` that is starting. */
const STARTING_MS = 60_000;
const WORKER_ID = /^[0-9a-f-]{36}$/;

/**
 * Removes what `task exec` runs on this state folder left when they were killed (SIGKILL,
 * a crash, a reboot): the containers, volumes and builds of their worker ids, and their
 * temp folders. Each run holds the lock of its folder `<state-dir>/exec/<worker id>` for
 * its whole life, so a folder whose holder is alive is left alone, and one whose holder is
 * dead is taken over (by one process only) before anything of it is removed.
 * Returns the worker ids whose leftovers were removed.
 */
export async function removeDeadExecRuns(
  stateDir: string,
  engine: Engine,
  log: Logger,
): Promise<string[]> {
  const root = execRunsDir(stateDir);
  const removed: string[] = [];
  for (const id of await readdir(root).catch(() => [] as string[])) {
    if (!WORKER_ID.test(id)) continue;
    const dir = join(root, id);
    const holder = await lockHolder(dir);
    if (holder === 'alive') continue;
    if (holder === 'none') {
      const age = await stat(dir).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age < STARTING_MS) continue;
    }
    let lock: Awaited<ReturnType<typeof lockStateDir>>;
    try {
      lock = await lockStateDir(dir);
    } catch {
      continue; // another process took it first
    }
    try {
      await engine.removeOrphanBuilds(id);
      const tmps = [...new Set([workerTmpDir(id), await recordedTmpDir(dir, id)])].filter(
        (tmp): tmp is string => tmp !== undefined,
      );
      // Its sized filesystems are mounted over its volumes' folders: released first.
      for (const tmp of tmps) await releaseSizedDisks(tmp);
      const left = await engine.removeByLabels({ [LABEL_WORKER]: id });
      await removeRunCgroupsOf(id);
      for (const tmp of tmps) {
        await rm(tmp, { recursive: true, force: true });
        await rm(`${tmp}.live`, { recursive: true, force: true });
      }
      await rm(dir, { recursive: true, force: true });
      removed.push(id);
      log.warn({ worker: id, ...left }, 'removed what a killed task exec left');
    } catch (error) {
      // The folder stays: the next command tries again.
      log.warn({ err: error, worker: id }, 'could not remove what a killed task exec left');
    } finally {
      lock.release();
    }
  }
  return removed;
}

/** The temp folder the run wrote down, if it is one of its id (never another path). */
async function recordedTmpDir(dir: string, id: string): Promise<string | undefined> {
  const path = (await readFile(join(dir, RUN_TMP_FILE), 'utf8').catch(() => '')).trim();
  return isAbsolute(path) && basename(path) === basename(workerTmpDir(id)) ? path : undefined;
}
