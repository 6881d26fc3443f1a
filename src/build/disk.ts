import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readableSize } from '../config/free-space.js';
import { formatSize } from '../config/size.js';
import { imageSizeArgs, removeImageArgs } from '../engine/args.js';
import type { EngineContext } from '../engine/context.js';
import { execEngine, execEngineRaw } from '../engine/exec.js';
import { measureTree, measureVolume } from '../engine/volume-usage.js';
import { WorkerError } from '../errors.js';
import { buildMarkOf } from './leftovers.js';
import { readOwnedFile } from './owned-dirs.js';

/** How often a confined build's layer is measured: a build writes at most this long past the limit. */
export const BUILD_DISK_INTERVAL_MS = 2000;
/** How long after a measurement past the limit it is taken again, to be sure. */
const BUILD_DISK_CONFIRM_MS = 500;
/** A layer of millions of empty files is a bounded walk; past this many, it is over the limit. */
const MAX_ENTRIES = 1_000_000;
/**
 * What an entry of a layer counts at least: an inode, at the bytes per inode of an ext4
 * made with the defaults, so that a build takes no larger share of the host's inodes than
 * of its bytes.
 */
const ENTRY_BYTES = 16 * 1024;
/** How a build's layers are walked: whole files, and every entry an inode. */
const LAYER_WALK = { maxEntries: MAX_ENTRIES, wholeFiles: true, minEntryBytes: ENTRY_BYTES };

const storedSchema = (
  text: string,
): { id?: unknown; layer?: unknown; parent?: unknown; names?: unknown }[] => {
  const parsed: unknown = JSON.parse(text);
  return Array.isArray(parsed) ? parsed : [];
};

/** The engine's storage where the worker can read a layer's files itself; undefined elsewhere. */
interface Storage {
  graphRoot: string;
  /** The read-only stores beside it, where a parent layer may be. */
  imageStores: readonly string[];
  driver: 'overlay' | 'vfs';
  /** vfs: bytes of each parent layer, measured once. */
  parentBytes: Map<string, number>;
}

function storageOf(ctx: EngineContext): Storage | undefined {
  const { graphRoot, storageDriver: driver } = ctx.info;
  if (ctx.info.name !== 'podman' || !graphRoot) return undefined;
  if (driver !== 'overlay' && driver !== 'vfs') return undefined;
  return { graphRoot, imageStores: ctx.info.imageStores ?? [], driver, parentBytes: new Map() };
}

/** overlay's `diff` holds what the layer adds; vfs's folder holds the whole root filesystem. */
function layerDir(storage: Storage, layer: string): string {
  return storage.driver === 'overlay'
    ? join(storage.graphRoot, 'overlay', layer, 'diff')
    : join(storage.graphRoot, 'vfs', 'dir', layer);
}

/** vfs: the folder of the layer this one was copied from, or undefined when it has none. */
async function parentDir(storage: Storage, layer: string): Promise<string | undefined> {
  if (storage.driver !== 'vfs') return undefined;
  const layers = await readStored(join(storage.graphRoot, 'vfs-layers'), 'layers');
  const parent = parentsOf(layers).get(layer);
  if (!isId(parent)) return undefined;
  // The parent may be a base image's, in the read-only base store.
  const dirs = [storage.graphRoot, ...storage.imageStores].map((root) =>
    join(root, 'vfs', 'dir', parent),
  );
  return dirs.find((d) => existsSync(d)) ?? layerDir(storage, parent);
}

/** vfs: the size of the layer this one was copied from, measured once. */
async function baseBytes(ctx: EngineContext, storage: Storage, dir: string): Promise<number> {
  const known = storage.parentBytes.get(dir);
  if (known !== undefined) return known;
  const usage = await measureVolume(ctx, dir, LAYER_WALK);
  storage.parentBytes.set(dir, usage.bytes);
  return usage.bytes;
}

/**
 * Allocated bytes one layer adds (a sparse file counts what it takes), or more than
 * `stopAboveBytes` as soon as that is known. Throws when the layer is gone. A vfs layer
 * is a whole copy of its parent: what it holds that the parent does not hold the same is
 * what it adds (a file replaced by one as large counts, as it does in the commit).
 */
async function layerBytes(
  ctx: EngineContext,
  storage: Storage,
  layer: string,
  stopAboveBytes: number,
): Promise<number> {
  const dir = layerDir(storage, layer);
  const parent = await parentDir(storage, layer).catch(() => undefined);
  // A sparse file costs the layer little until the commit writes it whole: counted whole.
  const walk = { ...LAYER_WALK, stopAtBytes: stopAboveBytes };
  const usage = await measureTree(dir, parent ? { ...walk, sameAs: parent } : walk);
  if (usage.truncated) return stopAboveBytes + 1;
  if (usage.unreadable === 0) return usage.bytes;
  if (!parent) return (await measureVolume(ctx, dir, walk)).bytes;
  // A folder a RUN step made private, which the worker's own user cannot read: counted
  // inside podman's user namespace, whole, less the parent's whole copy.
  const base = await baseBytes(ctx, storage, parent);
  const whole = await measureVolume(ctx, dir, {
    ...LAYER_WALK,
    stopAtBytes: base + stopAboveBytes,
  });
  if (whole.truncated) return stopAboveBytes + 1;
  return Math.max(usage.bytes, whole.bytes - base);
}

export interface BuildDiskWatch {
  /** Stops measuring; resolves once a measurement under way has ended. */
  stop(): Promise<void>;
}

export interface BuildDiskPlaces {
  /** The build's TMPDIR, where buildah writes the files it bind-mounts into each RUN. */
  tmpDir?: string;
  /**
   * The engine's storage is the build's own: every layer in it is the build's (the base
   * images' are in the read-only base store), the stages it committed as well as the
   * working containers.
   */
  ownStore?: boolean;
}

/**
 * Measures, every BUILD_DISK_INTERVAL_MS, what a confined podman build wrote into its
 * layers and calls `onExceeded` once with the bytes seen past the limit. In a store of
 * its own that is every layer there; in a shared one, its buildah working containers
 * (found by the build's mark among the build arguments each keeps in its buildah.json).
 * A layer is read from the engine's storage: overlay's `diff` folder holds only what the
 * build wrote; vfs's folder holds the whole root filesystem, of which only what differs
 * from the parent layer counts (layerBytes). Other drivers, docker and a storage the worker cannot read are not
 * measured (the built image's size is still checked afterwards).
 */
export function watchBuildDisk(
  ctx: EngineContext,
  mark: string,
  limitBytes: number,
  onExceeded: (bytes: number) => void,
  places: BuildDiskPlaces = {},
): BuildDiskWatch | undefined {
  const { tmpDir, ownStore } = places;
  const found = storageOf(ctx);
  if (!found) return undefined;
  const storage: Storage = found;
  const { graphRoot, driver } = storage;
  const notOurs = new Set<string>();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const ended = new AbortController();

  async function ourLayers(): Promise<string[]> {
    if (ownStore) return storeLayers();
    const layers: string[] = [];
    for (const entry of await readStored(join(graphRoot, `${driver}-containers`), 'containers')) {
      const id = typeof entry.id === 'string' ? entry.id : '';
      if (!/^[0-9a-f]{64}$/.test(id) || notOurs.has(id) || typeof entry.layer !== 'string') {
        continue;
      }
      const found = await buildMarkOf(graphRoot, driver, id);
      if (found === mark) layers.push(entry.layer);
      // Another build's, or no build's: it never becomes ours. One whose buildah.json is
      // not written yet is read again next time.
      else if (found !== undefined) notOurs.add(id);
    }
    return layers;
  }

  /**
   * Every layer of the build's own store that a working container or a committed stage
   * (an unnamed image) stands on. Not the final image's own layer, the copy its commit
   * makes of the last working container (counted already), nor one a commit is still
   * writing, before its image holds it.
   */
  async function storeLayers(): Promise<string[]> {
    const [layers, images, containers] = await Promise.all([
      readStored(join(graphRoot, `${driver}-layers`), 'layers'),
      readStored(join(graphRoot, `${driver}-images`), 'images'),
      readStored(join(graphRoot, `${driver}-containers`), 'containers'),
    ]);
    const parents = parentsOf(layers);
    const stages = images.filter((i) => !Array.isArray(i.names) || i.names.length === 0);
    const found = new Set<string>();
    for (const top of [...containers, ...stages].map((entry) => entry.layer)) {
      for (let layer = top; isId(layer) && parents.has(layer) && !found.has(layer); ) {
        found.add(layer);
        layer = parents.get(layer);
      }
    }
    return [...found];
  }

  /** Bytes the build has written now, or more than the limit as soon as that is known. */
  async function used(): Promise<number> {
    // The build's TMPDIR: the files buildah bind-mounts into each RUN (/etc/hostname,
    // /run/.containerenv) are written in its folders buildah<n> there. Not the copy of a
    // layer that a commit spools there (a buildah<n> folder too, without a hostname; or
    // containers/image's): the layer itself is counted.
    let total = 0;
    for (const dir of tmpDir ? await runFolders(tmpDir) : []) {
      total += await measureVolume(ctx, dir, { ...LAYER_WALK, stopAtBytes: limitBytes - total + 1 })
        .then((usage) => (usage.truncated ? limitBytes + 1 : usage.bytes))
        .catch(() => 0);
    }
    for (const layer of await ourLayers()) {
      // A layer that went away: the build ended or moved on.
      total += await layerBytes(ctx, storage, layer, limitBytes - total).catch(() => 0);
      if (total > limitBytes) break;
    }
    return total;
  }

  async function measure(): Promise<void> {
    if ((await used()) <= limitBytes || stopped) return;
    // The final commit makes its image first and names it a moment later: in between it
    // reads as one more stage, a second copy of the last working container. Past the limit
    // twice, a moment apart, is past it.
    await sleep(BUILD_DISK_CONFIRM_MS, undefined, { signal: ended.signal }).catch(() => undefined);
    const total = stopped ? 0 : await used();
    if (total > limitBytes && !stopped) {
      stopped = true;
      onExceeded(total);
    }
  }

  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = measure()
        .catch(() => undefined) // an unreadable moment of the storage: measured again next time
        .finally(schedule);
    }, BUILD_DISK_INTERVAL_MS);
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      ended.abort();
      await running;
    },
  };
}

/** buildah's folders of RUN steps in a build's TMPDIR. */
async function runFolders(tmpDir: string): Promise<string[]> {
  const names = await readdir(tmpDir).catch(() => [] as string[]);
  return names
    .filter((name) => /^buildah\d+$/.test(name) && existsSync(join(tmpDir, name, 'hostname')))
    .map((name) => join(tmpDir, name));
}

const isId = (value: unknown): value is string =>
  typeof value === 'string' && /^[0-9a-f]{64}$/.test(value);

/** Each stored layer's parent (an ID, or nothing for a bottom layer), by the layer's ID. */
const parentsOf = (layers: ReturnType<typeof storedSchema>) =>
  new Map(layers.flatMap((l) => (isId(l.id) ? [[l.id, l.parent]] : [])));

/** containers.json / layers.json / images.json, and the volatile-*.json newer storage libraries keep apart. */
async function readStored(
  dir: string,
  kind: 'containers' | 'layers' | 'images',
): Promise<ReturnType<typeof storedSchema>> {
  const all: ReturnType<typeof storedSchema> = [];
  for (const name of [`${kind}.json`, `volatile-${kind}.json`]) {
    const text = await readOwnedFile(join(dir, name));
    if (!text) continue;
    try {
      all.push(...storedSchema(text));
    } catch {
      // being rewritten: read again next time
    }
  }
  return all;
}

/**
 * A finished build's image past the limit (a COPY of a large context file can be written
 * between two measurements) is removed and refused. Where the worker can read the
 * engine's storage, what counts is what the image's top layer (everything the build added,
 * as one layer with --layers=false) takes on disk; elsewhere (docker, other storage
 * drivers) the image's whole size as the engine reports it, base and sparse files included.
 */
export async function checkBuiltImageSize(
  ctx: EngineContext,
  image: string,
  limitBytes: number,
  ownStore = false,
): Promise<void> {
  const call = { timeoutMs: ctx.options.callTimeoutMs, maxStdoutBytes: 64 * 1024 };
  let bytes = await builtLayersBytes(ctx, image, limitBytes, ownStore).catch(() => undefined);
  if (bytes === undefined) {
    bytes = Number.parseInt((await execEngine(ctx.cli, imageSizeArgs(image), call)).trim(), 10);
  }
  if (!Number.isFinite(bytes) || bytes <= limitBytes) return;
  await execEngineRaw(ctx.cli, removeImageArgs(image), call);
  throw buildDiskLimitError(bytes, limitBytes, 'image');
}

/**
 * What the build added to the image: its top layer; in a store of its own, every layer
 * of the image held there (a stage FROM an earlier stage stacks the earlier one's).
 */
async function builtLayersBytes(
  ctx: EngineContext,
  image: string,
  limitBytes: number,
  ownStore: boolean,
): Promise<number | undefined> {
  const storage = storageOf(ctx);
  if (!storage) return undefined;
  const file = join(storage.graphRoot, `${storage.driver}-images`, 'images.json');
  const images = JSON.parse((await readOwnedFile(file)) ?? '') as {
    names?: unknown;
    layer?: unknown;
  }[];
  const top = images.find((i) => Array.isArray(i.names) && i.names.includes(image))?.layer;
  if (!isId(top)) return undefined;
  const stored = ownStore
    ? await readStored(join(storage.graphRoot, `${storage.driver}-layers`), 'layers')
    : [];
  const parents = parentsOf(stored);
  let total = 0;
  let layer: string | undefined = top;
  while (layer) {
    total += await layerBytes(ctx, storage, layer, limitBytes - total);
    if (total > limitBytes) break;
    // Down to the first layer that is not the build's: a base image's, in the base store.
    const parent = parents.get(layer);
    layer = isId(parent) && parents.has(parent) ? parent : undefined;
  }
  return total;
}

/** `layers`: seen while the build ran; `image`: the size of the image it made. */
export function buildDiskLimitError(
  bytes: number,
  limitBytes: number,
  seen: 'layers' | 'image',
): WorkerError {
  const size = `${readableSize(bytes)} (${bytes} bytes)`;
  const what =
    seen === 'layers'
      ? `The submission's build wrote ${size} into its layers`
      : `The submission's built image holds ${size}`;
  return new WorkerError(
    'DISK_LIMIT',
    `${what}, past the --disk-limit of ${formatSize(limitBytes)}: it was ${seen === 'layers' ? 'stopped' : 'removed'}`,
    { hint: 'make the image smaller, or the operator can raise --disk-limit' },
  );
}
