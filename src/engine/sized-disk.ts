import { constants } from 'node:fs';
import { access, mkdir, statfs, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { WorkerError } from '../errors.js';
import { execHost } from './exec.js';
import { bindMountArgs, diskLayout, loopMountArgs, mkfsArgs } from './sized-disk-args.js';
import { shareMountHolding } from './sized-disk-share.js';
import type { EngineInfo } from './types.js';

/**
 * A filesystem of its own for the volumes one container step writes: a sparse file in the
 * task's private temp folder, formatted ext4 and loop-mounted by the worker, whose
 * subfolders are bind-mounted onto the engine's folders of those volumes. A writer that
 * fills it gets "no space left on device", at --disk-limit and not past it, however fast
 * it writes; what it holds is read with one statfs instead of a walk.
 *
 * The worker binds the folders itself, not podman (`volume create --opt o=bind`): podman
 * 4.3's `volume import`, `volume export` and `cp` read and write such a volume's empty
 * folder while no container uses it, and the task stages and reads volumes exactly then.
 * Everything is released by releaseSizedDisks (sized-disk-release.ts), found again from the
 * folder alone, so a killed worker's filesystems go at its next start.
 */
export interface SizedDisk {
  /** Where the filesystem is mounted. */
  dir: string;
  image: string;
  limitBytes: number;
  /**
   * Less free space than this is a full disk: a writer is refused a whole write() it has no
   * room for (dd bs=8M stops up to 8 MiB short), so "full" is a band, a little wider than
   * the room made above the limit (see diskLayout).
   */
  fullBelowBytes: number;
  /** Blocks and inodes in use once it is made: the root folder and the volumes' folders. */
  baseline: { bytes: number; files: number };
}

export interface DiskUsage {
  /** Bytes written since the filesystem was made (allocated blocks, as the walk counts). */
  bytes: number;
  files: number;
  /** No inode is left: no file can be made any more, whatever its size. */
  outOfFiles: boolean;
  /** Bytes an unprivileged writer can still write. */
  freeBytes: number;
  /** Out of inodes, or of space (less than fullBelowBytes left): the writer was held here. */
  full: boolean;
}

const HOST_CALL_MS = 30_000;
const MKFS = 'mkfs.ext4';
const FULL_BAND_BYTES = 1024 * 1024;

/** Makes and mounts a filesystem at `<root>/<name>` whose writers can hold `limitBytes`. */
export async function createSizedDisk(
  root: string,
  name: string,
  limitBytes: number,
): Promise<SizedDisk> {
  const image = join(root, `${name}.img`);
  const dir = join(root, name);
  const layout = diskLayout(limitBytes);
  await writeFile(image, '', { mode: 0o600, flag: 'wx' });
  await truncate(image, layout.fileBytes);
  await mkdir(dir, { mode: 0o700 });
  await execHost(MKFS, mkfsArgs(image, layout), HOST_CALL_MS);
  await shareMountHolding(dir);
  await execHost('mount', loopMountArgs(image, dir), HOST_CALL_MS);
  return {
    dir,
    image,
    limitBytes,
    fullBelowBytes: FULL_BAND_BYTES + Math.ceil(limitBytes / 128),
    baseline: { bytes: 0, files: 0 },
  };
}

/**
 * Gives the disk a folder for `volume` and mounts it over the volume's own host folder, so
 * the engine's every use of the volume (import, export, containers) lands on the disk.
 */
export async function bindVolume(disk: SizedDisk, volume: string, hostDir: string): Promise<void> {
  const dir = join(disk.dir, volume);
  await mkdir(dir, { mode: 0o755 });
  await shareMountHolding(hostDir);
  await execHost('mount', bindMountArgs(dir, hostDir), HOST_CALL_MS);
}

/** Takes what the disk holds now as its empty state (after its volumes' folders are made). */
export async function settleBaseline(disk: SizedDisk): Promise<void> {
  const now = await rawUsage(disk.dir);
  disk.baseline = { bytes: now.bytes, files: now.files };
}

/** What was written to the disk since it was made: one statfs, however many files. */
export async function sizedDiskUsage(disk: SizedDisk): Promise<DiskUsage> {
  const now = await rawUsage(disk.dir);
  return {
    bytes: Math.max(0, now.bytes - disk.baseline.bytes),
    files: Math.max(0, now.files - disk.baseline.files),
    outOfFiles: now.freeFiles === 0,
    freeBytes: now.freeBytes,
    full: now.freeFiles === 0 || now.freeBytes < disk.fullBelowBytes,
  };
}

async function rawUsage(dir: string) {
  const info = await statfs(dir);
  return {
    bytes: (info.blocks - info.bfree) * info.bsize,
    files: info.files - info.ffree,
    freeFiles: info.ffree,
    freeBytes: info.bavail * info.bsize,
  };
}

/**
 * Why this host gets only the poll, or undefined when a sized filesystem per step can be
 * made: the worker must be root (mount), the engine local rootful podman (whose CLI runs
 * in the worker's mount namespace and sees its mounts), with loop devices and mkfs.ext4.
 */
export async function sizedDiskUnavailable(info: EngineInfo): Promise<string | undefined> {
  if (info.engineHost) return "the engine is remote: its volumes are on another host's disk";
  if (info.name !== 'podman') {
    return "docker's volumes are mounted by dockerd, which need not see this worker's mounts (another mount namespace)";
  }
  if (info.rootless || process.getuid?.() !== 0) {
    return 'the worker does not run as root with rootful podman: it cannot mount a filesystem';
  }
  if (!info.graphRoot) return 'the engine does not say where its volumes are (no GraphRoot)';
  try {
    await access('/dev/loop-control', constants.R_OK | constants.W_OK);
  } catch {
    return 'this host has no loop devices (/dev/loop-control)';
  }
  try {
    await execHost(MKFS, ['-V'], HOST_CALL_MS);
  } catch {
    return `${MKFS} was not found (apt-get install e2fsprogs)`;
  }
  return undefined;
}

/** A sized disk that could not be made is the worker's fault: the task is tried again. */
export function sizedDiskError(error: unknown): WorkerError {
  const cause = error instanceof WorkerError ? error : undefined;
  return new WorkerError(
    'ENGINE_FAILED',
    `could not make the task's sized filesystem: ${(error as Error).message}`,
    {
      retryable: true,
      cause: error,
      ...(cause?.detail ? { detail: cause.detail } : {}),
      hint: 'run compute-worker doctor (check disk-bound); --disk-bound poll turns the sized filesystems off',
    },
  );
}
