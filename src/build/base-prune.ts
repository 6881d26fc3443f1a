import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { lockStateDir } from '../config/state-lock.js';
import { allImageIdsArgs, removeImageArgs } from '../engine/args.js';
import type { EngineContext } from '../engine/context.js';
import { execEngine, execEngineRaw } from '../engine/exec.js';
import type { BaseStoreSummary } from '../engine/types.js';
import { measureTree } from '../engine/volume-usage.js';
import type { BaseStore } from './store.js';

/** How often the base store is compared with the host's, at most (any worker of the host). */
export const BASE_PRUNE_INTERVAL_MS = 10 * 60_000;
const HOUR_MS = 60 * 60_000;

/**
 * How long a copy the host no longer has stays in the base store: a build that found the
 * base on the host just before it went reads the copy until its timeout at the latest, and
 * siblings may run with a longer one than this worker.
 */
export function basePruneGraceMs(options: { buildTimeoutMs?: number }): number {
  return Math.max(HOUR_MS, 2 * (options.buildTimeoutMs ?? 0));
}

const Record = z.object({
  checkedMs: z.number(),
  /** Since when each copy has been missing on the host, by image ID. */
  missing: z.record(z.string(), z.number()),
});
type PruneRecord = z.infer<typeof Record>;

/** In the store's lock folder: the worker's, never the engine user's (see baseStoreFor). */
const recordFile = (bases: BaseStore) => join(bases.lockDir, 'missing.json');

async function readRecord(bases: BaseStore): Promise<PruneRecord> {
  const text = await readFile(recordFile(bases), 'utf8').catch(() => '');
  try {
    return Record.parse(JSON.parse(text));
  } catch {
    return { checkedMs: 0, missing: {} };
  }
}

async function writeRecord(bases: BaseStore, record: PruneRecord): Promise<void> {
  const file = recordFile(bases);
  await writeFile(`${file}.new`, `${JSON.stringify(record)}\n`, { mode: 0o600 });
  await rename(`${file}.new`, file);
}

/**
 * Removes from the base store the copies of images the host's store no longer holds (the
 * operator removed the base, or gave its name to another image), once each has been
 * missing for `graceMs`: the base store gives back the disk the host's removal freed.
 * At most once per BASE_PRUNE_INTERVAL_MS, and never waiting: while a sibling holds the
 * store's lock (copying a base in) it is left for the next time. Returns the IDs removed.
 */
export async function pruneBases(
  host: EngineContext,
  bases: BaseStore,
  options: { now?: number; graceMs?: number; signal?: AbortSignal } = {},
): Promise<string[]> {
  const now = options.now ?? Date.now();
  const graceMs = options.graceMs ?? basePruneGraceMs(host.options);
  if (now - (await readRecord(bases)).checkedMs < BASE_PRUNE_INTERVAL_MS) return [];
  const lock = await lockStateDir(bases.lockDir).catch(() => undefined);
  if (!lock) return [];
  try {
    const record = await readRecord(bases);
    if (now - record.checkedMs < BASE_PRUNE_INTERVAL_MS) return [];
    const call = { timeoutMs: host.options.callTimeoutMs, signal: options.signal };
    const [held, onHost] = await Promise.all([imageIds(bases.owner, call), imageIds(host, call)]);
    const missing: PruneRecord['missing'] = {};
    const removed: string[] = [];
    for (const id of held) {
      if (onHost.has(id)) continue;
      const since = record.missing[id] ?? now;
      if (now - since < graceMs) {
        missing[id] = since;
        continue;
      }
      const gone = await execEngineRaw(bases.owner.cli, removeImageArgs(id), call);
      // A copy that another one stands on (a base FROM a base) goes after that one.
      if (gone.exitCode === 0) removed.push(id);
      else missing[id] = since;
    }
    await writeRecord(bases, { checkedMs: now, missing });
    return removed;
  } finally {
    lock.release();
  }
}

const isId = (line: string) => /^(sha256:)?[0-9a-f]{64}$/.test(line);

/** The IDs of every image of a store. */
async function imageIds(
  ctx: EngineContext,
  call: { timeoutMs: number; signal?: AbortSignal },
): Promise<Set<string>> {
  const listed = await execEngine(ctx.cli, allImageIdsArgs(), call);
  return new Set(
    listed
      .split('\n')
      .map((line) => line.trim())
      .filter(isId),
  );
}

/** What the base store holds, looked at without changing it. */
export async function summarizeBases(
  host: EngineContext,
  bases: BaseStore,
): Promise<BaseStoreSummary> {
  const root = bases.spec.root;
  if (!existsSync(root)) return { root, exists: false, images: 0, missing: 0, bytes: 0 };
  const call = { timeoutMs: host.options.callTimeoutMs };
  const [held, onHost] = await Promise.all([imageIds(bases.owner, call), imageIds(host, call)]);
  const usage = await measureTree(root, { maxEntries: 2_000_000 });
  return {
    root,
    exists: true,
    images: held.size,
    missing: [...held].filter((id) => !onHost.has(id)).length,
    bytes: usage.bytes,
  };
}
