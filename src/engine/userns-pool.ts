import { mkdir, readdir, readFile, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { lockHolder, lockStateDir, type StateLock } from '../config/state-lock.js';
import { WorkerError } from '../errors.js';
import { LABEL_USERNS } from './labels.js';
import type { Engine, IdMaps } from './types.js';

/**
 * A full-size image (Debian's has files and users up to 65534) needs this many ids: each
 * container's namespace maps its ids 0..65535 onto a range of the host's of this size.
 */
export const NAMESPACE_SIZE = 65536;
/** The /etc/subuid and /etc/subgid entry rootful podman (and this pool) takes ranges from. */
export const RANGE_OWNER = 'containers';
/** Slot 0 for builds, and room for a learn task's containers at least. */
const MIN_SLOTS = 4;
/** Where the slots' locks are: one folder for every worker on the host, gone at reboot. */
export const DEFAULT_POOL_DIR = '/run/compute-worker/userns';

export interface SubIdEntry {
  name: string;
  start: number;
  count: number;
}

export function parseSubIds(text: string): SubIdEntry[] {
  return text.split('\n').flatMap((line) => {
    const [name, start, count] = line.trim().split(':');
    if (!name || !/^\d+$/.test(start ?? '') || !/^\d+$/.test(count ?? '')) return [];
    return [{ name, start: Number(start), count: Number(count) }];
  });
}

/** The `containers` ranges of both files, or why there is none to use. */
export interface PoolRange {
  uidStart: number;
  gidStart: number;
  slots: number;
}

export async function readPoolRange(
  files = { subuid: '/etc/subuid', subgid: '/etc/subgid' },
): Promise<PoolRange | string> {
  const ranges: SubIdEntry[] = [];
  for (const file of [files.subuid, files.subgid]) {
    const entries = parseSubIds(await readFile(file, 'utf8').catch(() => ''));
    const own = entries.find((e) => e.name === RANGE_OWNER);
    if (!own) return `${file} has no \`${RANGE_OWNER}\` entry`;
    if (own.count < MIN_SLOTS * NAMESPACE_SIZE) {
      return `the \`${RANGE_OWNER}\` entry of ${file} has ${own.count} ids, fewer than the ${MIN_SLOTS * NAMESPACE_SIZE} of ${MIN_SLOTS - 1} containers at once (${NAMESPACE_SIZE} each, and a range for builds)`;
    }
    const overlap = entries.find(
      (e) => e !== own && e.start < own.start + own.count && own.start < e.start + e.count,
    );
    if (overlap) {
      return `the \`${RANGE_OWNER}\` entry of ${file} (${own.start}:${own.count}) overlaps the range of ${overlap.name} (${overlap.start}:${overlap.count}): a container's ids could be that user's`;
    }
    ranges.push(own);
  }
  const [uid, gid] = ranges as [SubIdEntry, SubIdEntry];
  return {
    uidStart: uid.start,
    gidStart: gid.start,
    slots: Math.floor(Math.min(uid.count, gid.count) / NAMESPACE_SIZE),
  };
}

/**
 * Slot `index` of a range: the host ids its container's 0..65535 are. Slot 0 is never
 * handed out: it is the ids rootful untrusted builds take by default (build/userns.ts).
 */
export function slotIdMap(range: PoolRange, index: number): IdMaps {
  return {
    uid: { start: range.uidStart + index * NAMESPACE_SIZE, count: NAMESPACE_SIZE },
    gid: { start: range.gidStart + index * NAMESPACE_SIZE, count: NAMESPACE_SIZE },
  };
}

export interface HeldIdMap {
  map: IdMaps;
  release(): void;
}

/**
 * Hands out the host's id ranges, one per container, to every worker on the host: slot N
 * is held through the lock of `<dir>/N` (a file naming its live holder, see state-lock.ts).
 * podman's own `--userns=auto` allocator was not usable: on podman 4.3 concurrent creates
 * with it deadlock on the storage lock. A slot whose holder died may still have that
 * worker's container (until its restart removes it): it is taken only when `inUse` says
 * no container has its ids.
 */
export class UsernsPool {
  private next: number;

  constructor(
    readonly range: PoolRange,
    readonly dir: string,
    private readonly inUse: (map: IdMaps) => Promise<boolean>,
  ) {
    // Workers start at different places: fewer of them try the same slot at once.
    this.next = 1 + Math.floor(Math.random() * (range.slots - 1));
  }

  async acquire(): Promise<HeldIdMap> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (let tried = 1; tried < this.range.slots; tried++) {
      const index = this.next;
      this.next = 1 + (this.next % (this.range.slots - 1));
      const held = await this.tryTake(index);
      if (held) return held;
    }
    throw new WorkerError(
      'ENGINE_FAILED',
      `every one of the ${this.range.slots} user namespace ranges of the \`${RANGE_OWNER}\` entry in /etc/subuid is in use`,
      {
        retryable: true,
        hint: 'give the containers entry of /etc/subuid and /etc/subgid more ids (65536 per container at once); see compute-worker doctor, check userns',
      },
    );
  }

  /**
   * Gives back the slots of dead holders that no container uses any more (a worker killed
   * while it held them, whose containers its restart has removed), so that the folder
   * holds live slots only. Returns how many it gave back.
   */
  async sweep(): Promise<number> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    let freed = 0;
    for (const name of names) {
      const index = Number(name);
      if (!Number.isInteger(index) || index < 1 || index >= this.range.slots) continue;
      if ((await lockHolder(join(this.dir, name)).catch(() => 'dead' as const)) !== 'dead')
        continue;
      const held = await this.tryTake(index);
      if (!held) continue;
      held.release();
      freed++;
    }
    return freed;
  }

  private async tryTake(index: number): Promise<HeldIdMap | undefined> {
    const slot = join(this.dir, String(index));
    const before = await lockHolder(slot).catch(() => 'dead' as const);
    if (before === 'alive') return undefined;
    await mkdir(slot, { recursive: true, mode: 0o700 });
    let lock: StateLock;
    try {
      lock = await lockStateDir(slot);
    } catch {
      return undefined; // taken meanwhile
    }
    const map = slotIdMap(this.range, index);
    if (before === 'dead' && (await this.inUse(map).catch(() => true))) {
      lock.release();
      return undefined;
    }
    return {
      map,
      release: () => {
        lock.release();
        // Not one folder per slot ever used left behind. A taker that made it meanwhile
        // finds it gone and tries the next slot.
        void rmdir(slot).catch(() => undefined);
      },
    };
  }
}

/**
 * --container-userns: the pool of host id ranges each container's namespace takes one
 * from, or why containers share the engine's namespace (logged at start, and by doctor).
 */
export async function usernsFor(
  setting: 'auto' | 'off',
  engine: Pick<Engine, 'info' | 'countContainers'>,
): Promise<{ userns?: UsernsPool; usernsShared?: string }> {
  if (setting === 'off') return { usernsShared: '--container-userns off' };
  const { info } = engine;
  if (info.name !== 'podman' || info.rootless || info.engineHost) {
    return {
      usernsShared:
        info.name === 'docker'
          ? "docker gives containers no namespace of their own (only the daemon's userns-remap, one range for all)"
          : info.engineHost
            ? "the engine is remote: this host's /etc/subuid is not the engine's"
            : "rootless podman's user has one range of 65536 ids, too few for a namespace of 65536 per container",
    };
  }
  const range = await readPoolRange();
  if (typeof range === 'string') return { usernsShared: range };
  const pool = new UsernsPool(range, DEFAULT_POOL_DIR, async (map) => {
    return (await engine.countContainers(LABEL_USERNS, String(map.uid.start))) > 0;
  });
  return { userns: pool };
}
