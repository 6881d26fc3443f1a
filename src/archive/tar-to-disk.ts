import { constants } from 'node:fs';
import { type FileHandle, link, lstat, mkdir, open, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { formatSize } from '../config/size.js';
import { WorkerError } from '../errors.js';
import {
  archiveRejected,
  nameParts,
  resolveLimits,
  showName,
  type TarLimits,
} from './tar-policy.js';
import { type CheckedEntry, type ReadOptions, readTarEntries } from './tar-reader.js';

const CREATE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const REPLACE = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;

export interface ExtractOptions {
  gzip: boolean;
  limits?: Partial<TarLimits>;
  /** Names the archive in messages, e.g. "build context"; "archive" when unset. */
  label?: string;
}

/**
 * Extracts an untrusted archive into `dir` (created if missing; meant to be empty): only
 * regular files, folders, symlinks whose target stays inside and hard links to files already
 * extracted. Files get mode 0o755 or 0o644 and the worker's own owner. No write ever goes
 * through a symlink: files are opened with O_NOFOLLOW|O_EXCL and every parent folder is
 * checked with lstat before first use.
 */
export async function extractTarToDir(
  input: Readable,
  dir: string,
  options: ExtractOptions,
): Promise<{ entries: number; bytes: number }> {
  const label = options.label ?? 'archive';
  await mkdir(dir, { recursive: true });
  const folders = new Set<string>(['']);
  let entries = 0;
  let bytes = 0;
  try {
    for await (const entry of readTarEntries(input, options)) {
      await ensureParents(dir, entry.name, folders, label);
      const path = join(dir, entry.name);
      entries += 1;
      if (entry.type === 'directory') {
        await ensureFolder(dir, entry.name, label);
        folders.add(entry.name);
      } else if (entry.type === 'symlink') {
        await symlink(entry.linkname as string, path);
      } else if (entry.type === 'link') {
        await link(join(dir, entry.linkname as string), path);
      } else {
        const handle = await open(path, CREATE_NEW, entry.mode);
        bytes += await writeBody(handle, entry, Number.POSITIVE_INFINITY, label);
      }
    }
  } catch (error) {
    throw diskFailure(error, `could not extract the ${label} into ${dir}`);
  }
  return { entries, bytes };
}

/** A local file system failure (full disk, a symlink where the file should go) is the worker's. */
function diskFailure(error: unknown, message: string): WorkerError {
  if (error instanceof WorkerError) return error;
  return new WorkerError('INTERNAL', message, {
    detail: error instanceof Error ? error.message : String(error),
    cause: error,
  });
}

/**
 * Copies the first regular file named one of `names` out of an uncompressed tar into `file`
 * (replaced if present, never followed if a symlink), checking the rest of the archive as it
 * drains. Returns which name was found and its size, or undefined when none is there.
 */
export async function extractEntryToFile(
  input: Readable,
  names: string | string[],
  file: string,
  options: Pick<ReadOptions, 'limits' | 'label' | 'budget' | 'plainOnly'> & {
    maxBytes?: number;
  } = {},
): Promise<{ name: string; size: number } | undefined> {
  const label = options.label ?? 'archive';
  const wanted = wantedNames(names, options.limits);
  const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
  let found: { name: string; size: number } | undefined;
  try {
    for await (const entry of readTarEntries(input, { ...options, gzip: false })) {
      if (found || !wanted.includes(entry.name)) continue;
      requireFile(entry, label);
      const handle = await open(file, REPLACE, 0o600);
      found = { name: entry.name, size: await writeBody(handle, entry, maxBytes, label) };
    }
  } catch (error) {
    throw diskFailure(error, `could not copy '${showName(wanted[0] ?? '')}' out of the ${label}`);
  }
  return found;
}

export function wantedNames(names: string | string[], limits?: Partial<TarLimits>): string[] {
  return (Array.isArray(names) ? names : [names]).map((name) => {
    const parts = nameParts(name, resolveLimits(limits));
    if (typeof parts === 'string' || parts.length === 0) {
      throw new WorkerError('INTERNAL', `'${showName(name)}' cannot name an archive entry`);
    }
    return parts.join('/');
  });
}

export function requireFile(entry: CheckedEntry, label: string): void {
  if (entry.type !== 'file') {
    throw archiveRejected(`${label} entry '${showName(entry.name)}' is not a regular file`);
  }
}

export function tooLarge(entry: CheckedEntry, label: string, maxBytes: number): WorkerError {
  return archiveRejected(
    `${label} entry '${showName(entry.name)}' is larger than the ${formatSize(maxBytes)} allowed`,
  );
}

async function writeBody(
  handle: FileHandle,
  entry: CheckedEntry,
  maxBytes: number,
  label: string,
): Promise<number> {
  let written = 0;
  try {
    if (entry.size > maxBytes) throw tooLarge(entry, label, maxBytes);
    for await (const chunk of entry.body) {
      await handle.write(chunk);
      written += chunk.length;
    }
    // the process umask may have narrowed the mode given to open()
    await handle.chmod(entry.mode);
  } finally {
    await handle.close();
  }
  return written;
}

async function ensureParents(dir: string, name: string, folders: Set<string>, label: string) {
  const parts = name.split('/');
  for (let i = 1; i < parts.length; i += 1) {
    const parent = parts.slice(0, i).join('/');
    if (folders.has(parent)) continue;
    await ensureFolder(dir, parent, label);
    folders.add(parent);
  }
}

/** Makes a folder, or accepts one already there; anything else (a symlink above all) is refused. */
async function ensureFolder(dir: string, name: string, label: string): Promise<void> {
  const path = join(dir, name);
  try {
    await mkdir(path, { mode: 0o755 });
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const stats = await lstat(path);
  if (!stats.isDirectory()) {
    throw archiveRejected(
      `${label} entry '${showName(name)}' needs a folder where something else already is on disk`,
    );
  }
}
