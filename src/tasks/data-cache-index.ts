import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import {
  lockHolder,
  lockStateDir,
  type StateLock,
  waitForStateLock,
} from '../config/state-lock.js';
import { WorkerError } from '../errors.js';

/**
 * The files of the host's data cache, in --data-cache-dir:
 *   lock                        held while the index changes (lockStateDir)
 *   entries/<volume>.json       one cached set each (DataCacheEntry)
 *   staging/<key>/lock          held while that set is staged
 *   leases/<volume>/<run>/lock  held by each task whose containers may mount the volume
 * Every lock names its process (pid, start time, boot): one of a dead process counts for
 * nothing, whatever killed it.
 */

const BlobSchema = z.object({
  uuid: z.string(),
  sha256: z.string(),
  etag: z.string().optional(),
  size: z.number().int().nonnegative(),
});

const EntrySchema = z.object({
  key: z.string().regex(/^[0-9a-f]{64}$/),
  volume: z.string().regex(/^cw-data-[0-9a-f]+$/),
  uuids: z.array(z.string()),
  owner: z.string(),
  dirs: z.array(z.string()),
  blobs: z.array(BlobSchema),
  bytes: z.number().int().nonnegative(),
  lastUsedMs: z.number(),
  /** Only once every file is in the volume. */
  complete: z.boolean(),
  /** A newer volume of the key replaced it: removed once no task mounts it. */
  superseded: z.boolean().optional(),
});

export type DataCacheEntry = z.infer<typeof EntrySchema>;

const INDEX_WAIT_MS = 120_000;

const entriesDir = (dir: string) => join(dir, 'entries');
const entryFile = (dir: string, volume: string) => join(entriesDir(dir), `${volume}.json`);
const stagingDir = (dir: string, key: string) => join(dir, 'staging', key);
const leasesDir = (dir: string, volume: string) => join(dir, 'leases', volume);

/** Every readable entry; a file that cannot be read is left out (removeUnreadable drops it). */
export async function readEntries(dir: string): Promise<DataCacheEntry[]> {
  const names = await readdir(entriesDir(dir)).catch(() => [] as string[]);
  const entries = await Promise.all(
    names.filter((n) => n.endsWith('.json')).map((name) => readEntry(join(entriesDir(dir), name))),
  );
  return entries.filter((e): e is DataCacheEntry => e !== undefined);
}

async function readEntry(file: string): Promise<DataCacheEntry | undefined> {
  try {
    const parsed = EntrySchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Entry files that no reader understands (a half-written one cannot be: they are renamed). */
export async function removeUnreadable(dir: string): Promise<void> {
  const names = await readdir(entriesDir(dir)).catch(() => [] as string[]);
  for (const name of names) {
    const file = join(entriesDir(dir), name);
    if (!name.endsWith('.json') || !(await readEntry(file))) await rm(file, { force: true });
  }
}

/** Written aside, then renamed: a reader sees the old entry or the new one, whole. */
export async function writeEntry(dir: string, entry: DataCacheEntry): Promise<void> {
  await mkdir(entriesDir(dir), { recursive: true, mode: 0o700 });
  const file = entryFile(dir, entry.volume);
  const aside = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(aside, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
  await rename(aside, file);
}

export async function removeEntry(dir: string, volume: string): Promise<void> {
  await rm(entryFile(dir, volume), { force: true });
  await rm(leasesDir(dir, volume), { recursive: true, force: true });
}

/** Runs `work` holding the index lock, waiting for another worker's turn. */
export async function withIndexLock<T>(dir: string, work: () => Promise<T>): Promise<T> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const lock = await waitForLock(dir, { deadlineMs: Date.now() + INDEX_WAIT_MS });
  try {
    return await work();
  } finally {
    lock.release();
  }
}

/** The lock of one key's staging: a second worker needing the same new set waits here. */
export async function lockStaging(dir: string, key: string, signal?: AbortSignal) {
  const folder = stagingDir(dir, key);
  for (let attempt = 1; ; attempt++) {
    await mkdir(folder, { recursive: true, mode: 0o700 });
    try {
      return await waitForLock(folder, { signal });
    } catch (error) {
      // removeIdleFolders took the folder away meanwhile: made again.
      if (attempt >= 5 || !isGone(error)) throw error;
    }
  }
}

const isGone = (error: unknown): boolean =>
  (error as NodeJS.ErrnoException).code === 'ENOENT' ||
  ((error as { cause?: NodeJS.ErrnoException }).cause?.code ?? '') === 'ENOENT';

/** How long a staging folder is left untouched (no lock, no waiter) before it goes. */
export const IDLE_FOLDER_MS = 60 * 60 * 1000;

/**
 * Under the index lock: the folders that one staging per key, and the leases of each
 * volume, leave behind. A staging folder goes once no live process holds or waits on its
 * lock (a waiter writes there every 100 ms) for IDLE_FOLDER_MS; the leases of a volume
 * the index no longer names go once no live lease is left.
 */
export async function removeIdleFolders(dir: string, nowMs = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  const staging = join(dir, 'staging');
  for (const key of await readdir(staging).catch(() => [] as string[])) {
    const folder = join(staging, key);
    const info = await stat(folder).catch(() => undefined);
    if (!info?.isDirectory() || nowMs - info.mtimeMs < IDLE_FOLDER_MS) continue;
    if ((await lockHolder(folder)) === 'alive') continue;
    await rm(folder, { recursive: true, force: true });
    removed.push(folder);
  }
  const named = new Set((await readEntries(dir)).map((e) => e.volume));
  for (const volume of await readdir(join(dir, 'leases')).catch(() => [] as string[])) {
    if (named.has(volume) || (await leased(dir, volume))) continue;
    await rm(leasesDir(dir, volume), { recursive: true, force: true });
    removed.push(leasesDir(dir, volume));
  }
  return removed;
}

/** Whether a live process (this one included) is staging the key now. */
export async function stagingNow(dir: string, key: string): Promise<boolean> {
  return (await lockHolder(stagingDir(dir, key))) === 'alive';
}

function waitForLock(
  folder: string,
  { deadlineMs, signal }: { deadlineMs?: number; signal?: AbortSignal },
): Promise<StateLock> {
  return waitForStateLock(folder, {
    deadlineMs,
    signal,
    cancelled: 'The task was cancelled',
    timedOut: (error) =>
      new WorkerError('INTERNAL', `the data cache lock ${folder} stays taken`, {
        retryable: true,
        cause: error,
        hint: 'another worker of the host holds it; it is taken over once that worker dies',
      }),
  });
}

/**
 * A lease on the volume for one task: a folder naming its worker and run, holding a lock of
 * this process. Taken under the index lock, so eviction never removes a volume between
 * the choice of it and its lease. The release is synchronous: a task's scope ends with it.
 */
export async function takeLease(
  dir: string,
  volume: string,
  holder: { workerId: string; runId: string },
): Promise<() => void> {
  const folder = join(leasesDir(dir, volume), holder.runId);
  await mkdir(folder, { recursive: true, mode: 0o700 });
  await writeFile(
    join(folder, 'holder.json'),
    `${JSON.stringify({ worker: holder.workerId, run: holder.runId, pid: process.pid })}\n`,
    { mode: 0o600 },
  );
  const lock = await lockStateDir(folder);
  return () => {
    lock.release();
    rmSync(folder, { recursive: true, force: true });
  };
}

/** Whether a live process holds a lease on the volume; dead leases are removed on the way. */
export async function leased(dir: string, volume: string): Promise<boolean> {
  const folder = leasesDir(dir, volume);
  let live = false;
  for (const run of await readdir(folder).catch(() => [] as string[])) {
    if ((await lockHolder(join(folder, run))) === 'alive') live = true;
    else await rm(join(folder, run), { recursive: true, force: true });
  }
  return live;
}
