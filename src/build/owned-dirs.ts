import { constants } from 'node:fs';
import { lchown, lstat, mkdir, open } from 'node:fs/promises';
import { execa } from 'execa';
import { WorkerError } from '../errors.js';

/**
 * The folders of a build's engine user (the build user, or the user a rootless engine runs
 * as). That user is what a build escape reaches, so the worker, as root, never follows a
 * link that user could have placed: its folders are made inside folders it cannot write
 * and handed over with lchown, or made by that user itself, and removed by a tool that
 * does not follow links.
 */
export interface FolderOwner {
  uid: number;
  gid: number;
}

const isRoot = () => process.getuid?.() === 0;
/** A plain tool's run: no shell, a clean environment, a bound, its failure returned. */
const TOOL = {
  cwd: '/',
  env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
  extendEnv: false,
  reject: false,
  timeout: 60_000,
} as const;

/**
 * Makes the folders (and those above them) as `owner`, where that user's own files decide
 * where they go (its store, from its own storage.conf): the worker's rights are never lent
 * to a path there.
 */
export async function mkdirAs(owner: FolderOwner, dirs: readonly string[]): Promise<void> {
  if (!isRoot()) {
    for (const dir of dirs) await mkdir(dir, { recursive: true, mode: 0o700 });
    return;
  }
  const made = await execa('mkdir', ['-p', '-m', '700', '--', ...dirs], {
    ...TOOL,
    uid: owner.uid,
    gid: owner.gid,
  });
  if (made.exitCode !== 0) {
    throw new WorkerError(
      'ENGINE_FAILED',
      `uid ${owner.uid} could not make its folders ${dirs.join(', ')}`,
      {
        detail: String(made.stderr).slice(0, 2000),
        retryable: true,
        hint: 'check where that user keeps its podman storage (compute-worker doctor)',
      },
    );
  }
}

/**
 * Makes `dirs` (each inside the one before, the first inside a folder only the worker
 * writes), then hands them to `owner` from the innermost out: while a folder is handed
 * over, everything above it is still the worker's, so nothing in it can have been swapped.
 * A folder there already (a dead build's) that is not a folder, a link say, is refused.
 */
export async function handedDirs(
  dirs: readonly string[],
  owner: FolderOwner | undefined,
): Promise<void> {
  // Outermost first: a folder there already is looked at before anything is made in it.
  for (const dir of dirs) {
    await mkdir(dir, { mode: 0o700 }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
    if (!(await lstat(dir)).isDirectory()) {
      throw new WorkerError('ENGINE_FAILED', `${dir} is not a folder: it is not used`, {
        retryable: true,
      });
    }
  }
  for (const dir of [...dirs].reverse()) {
    const info = await lstat(dir);
    if (owner && (info.uid !== owner.uid || info.gid !== owner.gid)) {
      await lchown(dir, owner.uid, owner.gid);
    }
  }
}

/**
 * Removes a folder tree that another user may be changing while it goes: GNU rm walks it
 * without following a link, not even one swapped in for a folder it is inside (Node's
 * recursive rm looks each path up again, through whatever is there by then), and stays on
 * the tree's own file system.
 */
export async function removeTree(dir: string): Promise<void> {
  const removed = await execa('rm', ['-rf', '--one-file-system', '--', dir], TOOL);
  if (removed.exitCode !== 0) {
    throw new WorkerError('INTERNAL', `could not remove ${dir}`, {
      detail: String(removed.stderr).slice(0, 2000),
    });
  }
}

/** What a file that the engine user writes may hold, at most: a store's index, a pid. */
const OWNED_FILE_BYTES = 64 * 1024 ** 2;

/**
 * Reads a file the engine user (or the build it ran) writes, as text, or undefined when it
 * is not a plain file of at most `maxBytes`: never through a link, never blocked on a
 * FIFO or a device, never endless (a link to /dev/zero).
 */
export async function readOwnedFile(
  path: string,
  maxBytes = OWNED_FILE_BYTES,
): Promise<string | undefined> {
  const handle = await open(
    path,
    constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
  ).catch(() => undefined);
  if (!handle) return undefined;
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.size > maxBytes) return undefined;
    const buffer = Buffer.alloc(info.size);
    const { bytesRead } = await handle.read(buffer, 0, info.size, 0);
    return buffer.subarray(0, bytesRead).toString('utf8');
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}
