import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createSizedDisk, sizedDiskUnavailable } from '../engine/sized-disk.js';
import { releaseSizedDisks } from '../engine/sized-disk-release.js';
import type { EngineInfo } from '../engine/types.js';
import { type Check, fail, pass, warn } from './check.js';

const NAME = 'disk-bound';
const PROBE_BYTES = 16 * 1024 * 1024;

/**
 * Which bound --disk-limit gets on this host: a sized filesystem per writing step (proved
 * by making, mounting and releasing one in the temp folder), or the poll alone, and why.
 */
export async function diskBoundCheck(
  info: EngineInfo,
  tmpDir: string,
  mode: 'auto' | 'poll' = 'auto',
): Promise<Check> {
  const why = mode === 'poll' ? '--disk-bound poll' : await sizedDiskUnavailable(info);
  if (why) {
    return warn(
      NAME,
      `poll only: ${why}. The writable volumes are measured every 2s: a fast writer can pass --disk-limit by what it writes meanwhile`,
      'keep --min-free-disk well above what the disk takes in a few seconds; as root with local rootful podman each writing step gets a filesystem of --disk-limit instead',
    );
  }
  const dir = await mkdtemp(join(tmpDir, 'cw-disk-bound-'));
  try {
    const started = performance.now();
    await createSizedDisk(dir, 'probe', PROBE_BYTES);
    const ms = Math.round(performance.now() - started);
    await releaseSizedDisks(dir);
    return pass(
      NAME,
      `hard: a sized filesystem per task step (ext4 on a loop device in the temp folder, made and mounted in ${ms} ms)`,
    );
  } catch (error) {
    return fail(NAME, 'a sized filesystem could not be made', error);
  } finally {
    await releaseSizedDisks(dir).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}
