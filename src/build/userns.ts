import { readFile } from 'node:fs/promises';
import type { BuildIdMaps, IdRange } from '../engine/types.js';
import { NAMESPACE_SIZE, parseSubIds, RANGE_OWNER } from '../engine/userns-pool.js';
import { WorkerError } from '../errors.js';

/** Far above the ranges useradd hands out (SUB_UID_MAX is 600100000): no user of the host has these ids. */
export const DEFAULT_BUILD_USERNS = '2000000000:65536';
const MAX_ID = 4_294_967_294;

export function parseIdRange(text: string, what = '--build-userns'): IdRange {
  const match = /^(\d+):(\d+)$/.exec(text.trim());
  const start = Number(match?.[1]);
  const count = Number(match?.[2]);
  if (!match || start < 1 || count < 1 || start + count - 1 > MAX_ID) {
    throw new WorkerError('CONFIG_INVALID', `${what} "${text}" is not START:COUNT`, {
      hint: 'give a host id range that no user owns, e.g. 2000000000:65536 (never one that starts at 0)',
    });
  }
  return { start, count };
}

/**
 * The operator's range for both uids and gids; without one, the `containers` entries of
 * /etc/subuid and /etc/subgid (at most 65536 ids each); without those, DEFAULT_BUILD_USERNS.
 */
export async function buildIdMaps(configured?: string): Promise<BuildIdMaps> {
  if (configured) {
    const range = parseIdRange(configured);
    return { uid: range, gid: range };
  }
  const [uid, gid] = await Promise.all([subIdRange('/etc/subuid'), subIdRange('/etc/subgid')]);
  if (uid && gid) return { uid, gid };
  const range = parseIdRange(DEFAULT_BUILD_USERNS);
  return { uid: range, gid: range };
}

async function subIdRange(file: string): Promise<IdRange | undefined> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const entry = parseSubIds(text).find((e) => e.name === RANGE_OWNER);
  if (!entry) return undefined;
  try {
    const range = parseIdRange(`${entry.start}:${entry.count}`, file);
    return { start: range.start, count: Math.min(range.count, NAMESPACE_SIZE) };
  } catch {
    return undefined;
  }
}
