import { createHash, randomBytes } from 'node:crypto';
import { type BlobValidators, canRevalidate, sameBlob } from '../clients/blob-validators.js';
import { containerOwner } from '../config/owner.js';
import { LABEL_DATA_CACHE, LABEL_DATA_CACHE_DIR } from '../engine/labels.js';
import type { LabelledVolume } from '../engine/types.js';
import type { Logger } from '../log.js';
import type { DataCacheSettings, TaskEnv, TaskRun } from './context.js';
import {
  type DataCacheEntry,
  leased,
  lockStaging,
  readEntries,
  removeEntry,
  removeIdleFolders,
  removeUnreadable,
  stagingNow,
  takeLease,
  withIndexLock,
  writeEntry,
} from './data-cache-index.js';
import type { TaskScope } from './scope.js';
import { stageFiles } from './staging.js';

/**
 * The host's cache of staged data sets. A set is what one volume of a task holds: the
 * storage data of these uuids, in this order, owned by the containers' user, with these
 * empty folders. It is staged once into a volume of its own, labelled only with its key
 * (no worker, task or run label: no cleanup but the cache's removes it), and mounted
 * read-only by the later tasks that need it, after storage has said, blob by blob, that
 * it still holds the same bytes.
 */
export interface DataSet {
  uuids: readonly string[];
  dirs: readonly string[];
}

export interface CachedSet {
  volume: string;
  /** Bytes fetched from storage for this task: 0 when the set was there already. */
  fetched: number;
  reused: boolean;
}

/**
 * The key of a set: every part of what the volume holds, and nothing of the task. The
 * storage it came from is part of it: a uuid (and an ETag) means something on one storage
 * only, and workers of one host may serve different platforms.
 */
export function dataSetKey(
  set: DataSet,
  owner: { uid: number; gid: number },
  storage: string,
): string {
  const text = JSON.stringify({
    uuids: set.uuids,
    owner: `${owner.uid}:${owner.gid}`,
    dirs: set.dirs,
    storage,
  });
  return createHash('sha256').update(text).digest('hex');
}

/**
 * The label value of the volumes of one cache folder: several folders on one engine (a
 * test's, an operator's second) never sweep each other's volumes.
 */
export function cacheDirLabel(dir: string): Record<string, string> {
  return { [LABEL_DATA_CACHE_DIR]: createHash('sha256').update(dir).digest('hex').slice(0, 32) };
}

/** Named from the key (never from task text), with a generation of its own. */
export function cacheVolumeName(key: string): string {
  return `cw-data-${key.slice(0, 24)}${randomBytes(4).toString('hex')}`;
}

/**
 * The volume of the set from the cache, staged into it first when it is not there (or no
 * longer matches storage); the task holds a lease on it until its scope ends. Undefined
 * when the set is not to be cached: no cache, a blob storage gives no validator or no
 * length for, or a set larger than the cache (or than the room that unleased sets leave).
 */
export async function cachedDataSet(
  env: TaskEnv,
  run: TaskRun,
  scope: TaskScope,
  set: DataSet,
): Promise<CachedSet | undefined> {
  const cache = env.dataCache;
  const probe = env.storage.blobValidators?.bind(env.storage);
  if (!cache || !probe) return undefined;
  const now = await Promise.all(set.uuids.map((uuid) => probe('data', uuid, run.signal)));
  // A blob without a validator could never be found unchanged: cached, it would only
  // push out the sets that can be.
  if (!now.every(canRevalidate)) return undefined;
  const sizes = now.map((v) => v.size);
  if (sizes.some((size) => size === undefined)) return undefined;
  const bytes = (sizes as number[]).reduce((a, b) => a + b, 0);
  if (bytes > cache.maxBytes) return undefined;
  const owner = containerOwner(env.limits.user);
  const key = dataSetKey(set, owner, env.storage.description);
  const holder = { workerId: env.workerId, runId: scope.runId };
  // A second task needing the same new set waits here, then finds it staged.
  const staging = await lockStaging(cache.dir, key, run.signal);
  try {
    const found = await withIndexLock(cache.dir, () =>
      chooseVolume(env, cache, { key, set, owner, bytes, now, holder }),
    );
    if (found.kind === 'none') return undefined;
    scope.releases.push(found.release);
    if (found.kind === 'reuse') return { volume: found.volume, fetched: 0, reused: true };
    return await stageEntry(env, run, scope, found.entry);
  } finally {
    staging.release();
  }
}

type Choice =
  | { kind: 'reuse'; volume: string; release: () => void }
  | { kind: 'stage'; entry: DataCacheEntry; release: () => void }
  | { kind: 'none' };

/** Under the index lock: the matching entry with a lease, or a new one with room made. */
async function chooseVolume(
  env: TaskEnv,
  cache: DataCacheSettings,
  want: {
    key: string;
    set: DataSet;
    owner: { uid: number; gid: number };
    bytes: number;
    now: BlobValidators[];
    holder: { workerId: string; runId: string };
  },
): Promise<Choice> {
  // Listed before the entries are read, as the sweep needs it. A volume the engine lost
  // (a `podman volume prune`, a reset) is never reused: mounted by name, it would be made
  // anew, empty. The sweep below forgets its entry and the set is staged again.
  const volumes = await env.engine.listVolumes(cacheDirLabel(cache.dir));
  const present = new Set(volumes.map((volume) => volume.name));
  const entries = await readEntries(cache.dir);
  const ofKey = entries.filter((e) => e.key === want.key && e.complete && !e.superseded);
  const match = ofKey.find((e) => present.has(e.volume) && stillInStorage(e, want.now));
  if (match) {
    const release = await takeLease(cache.dir, match.volume, want.holder);
    await writeEntry(cache.dir, { ...match, lastUsedMs: Date.now() });
    return { kind: 'reuse', volume: match.volume, release };
  }
  // Storage holds other bytes now: the old volume goes once no task mounts it.
  for (const old of ofKey) await writeEntry(cache.dir, { ...old, superseded: true });
  await sweepLocked(env, cache, volumes);
  if (!(await makeRoom(env, cache, want.bytes))) return { kind: 'none' };
  const entry: DataCacheEntry = {
    key: want.key,
    volume: cacheVolumeName(want.key),
    uuids: [...want.set.uuids],
    owner: `${want.owner.uid}:${want.owner.gid}`,
    dirs: [...want.set.dirs],
    blobs: [],
    bytes: want.bytes,
    lastUsedMs: Date.now(),
    complete: false,
  };
  // The entry before the volume: a cache volume without one is an orphan to any sweep.
  await writeEntry(cache.dir, entry);
  const release = await takeLease(cache.dir, entry.volume, want.holder);
  return { kind: 'stage', entry, release };
}

function stillInStorage(entry: DataCacheEntry, now: BlobValidators[]): boolean {
  return (
    entry.blobs.length === now.length &&
    entry.blobs.every((blob, i) => sameBlob(blob, now[i] as BlobValidators))
  );
}

/**
 * Stages the new entry's volume; complete only once every file is in. A failure leaves
 * nothing; so does a set larger than announced, which is not cached (undefined).
 */
async function stageEntry(
  env: TaskEnv,
  run: TaskRun,
  scope: TaskScope,
  entry: DataCacheEntry,
): Promise<CachedSet | undefined> {
  const cache = env.dataCache as DataCacheSettings;
  const files = entry.uuids.map((uuid) => ({ kind: 'data' as const, uuid, name: uuid }));
  try {
    await env.engine.createVolume(
      { [LABEL_DATA_CACHE]: entry.key, ...cacheDirLabel(cache.dir) },
      entry.volume,
    );
    const staged = await stageFiles(env, run, entry.volume, files, {
      tmp: scope.tmp,
      dirs: [...entry.dirs],
      digests: true,
    });
    // Storage sent more than it announced (the blob changed between the two requests):
    // the room was made for less. The set is not kept; the task stages its own copy.
    if (staged.bytes > entry.bytes) {
      await withIndexLock(cache.dir, () => dropEntry(env, cache, entry.volume));
      return undefined;
    }
    await withIndexLock(cache.dir, () =>
      writeEntry(cache.dir, {
        ...entry,
        blobs: staged.blobs,
        bytes: staged.bytes,
        lastUsedMs: Date.now(),
        complete: true,
      }),
    );
    return { volume: entry.volume, fetched: staged.bytes, reused: false };
  } catch (error) {
    await withIndexLock(cache.dir, () => dropEntry(env, cache, entry.volume)).catch(
      () => undefined,
    );
    throw error;
  }
}

/** The volume first, then its index file: a volume is never left without one. */
async function dropEntry(env: TaskEnv, cache: DataCacheSettings, volume: string): Promise<void> {
  await env.engine.removeVolumes([volume]);
  await removeEntry(cache.dir, volume);
}

/**
 * Removes the least recently used entries no live task leases until `bytes` more fit.
 * False when they cannot: what is left is in use.
 */
async function makeRoom(env: TaskEnv, cache: DataCacheSettings, bytes: number): Promise<boolean> {
  const entries = (await readEntries(cache.dir)).sort((a, b) => a.lastUsedMs - b.lastUsedMs);
  let total = entries.reduce((sum, e) => sum + e.bytes, 0);
  for (const entry of entries) {
    if (total + bytes <= cache.maxBytes) break;
    if (!entry.complete || (await leased(cache.dir, entry.volume))) continue;
    await dropEntry(env, cache, entry.volume);
    total -= entry.bytes;
  }
  return total + bytes <= cache.maxBytes;
}

/**
 * Under the index lock: removes what no one finishes or uses any more. Incomplete entries
 * (a staging that was killed) and cache volumes without an entry, unless a live process
 * stages their key now; superseded entries no live task leases.
 */
async function sweepLocked(
  env: TaskEnv,
  cache: DataCacheSettings,
  listed?: readonly LabelledVolume[],
): Promise<string[]> {
  // Listed before the entries are read: an entry is written before its volume is made.
  const volumes = listed ?? (await env.engine.listVolumes(cacheDirLabel(cache.dir)));
  await removeUnreadable(cache.dir);
  const entries = await readEntries(cache.dir);
  const removed: string[] = [];
  const present = new Set(volumes.map((volume) => volume.name));
  for (const entry of entries) {
    const dead = !entry.complete && !(await stagingNow(cache.dir, entry.key));
    const unused = entry.superseded && !(await leased(cache.dir, entry.volume));
    // Complete, and its volume gone from the engine: nothing to mount any more.
    const lost = entry.complete && !present.has(entry.volume);
    if (!dead && !unused && !lost) continue;
    await dropEntry(env, cache, entry.volume);
    removed.push(entry.volume);
  }
  const known = new Set(entries.map((e) => e.volume));
  for (const volume of volumes) {
    if (known.has(volume.name)) continue;
    const key = volume.labels[LABEL_DATA_CACHE] ?? '';
    if (/^[0-9a-f]{64}$/.test(key) && (await stagingNow(cache.dir, key))) continue;
    await env.engine.removeVolumes([volume.name]);
    removed.push(volume.name);
  }
  await removeIdleFolders(cache.dir);
  return removed;
}

/** At start-up: what killed stagings and replaced sets left. A failure is logged only. */
export async function sweepDataCache(env: TaskEnv, log: Logger): Promise<void> {
  const cache = env.dataCache;
  if (!cache) return;
  try {
    const removed = await withIndexLock(cache.dir, () => sweepLocked(env, cache));
    if (removed.length)
      log.warn({ volumes: removed }, 'data cache: removed unfinished or unused sets');
  } catch (error) {
    log.warn({ err: error }, 'data cache: could not sweep');
  }
}
