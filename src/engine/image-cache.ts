import { readFile, rename, writeFile } from 'node:fs/promises';
import { z } from 'zod';
import { LABEL_BUILT_BY } from './labels.js';
import type { Engine, ImageFacts } from './types.js';

const recordSchema = z.object({
  version: z.literal(1),
  /** Last use (ms since the epoch) by image name. */
  lastUsed: z.record(z.string(), z.number()),
});

export interface ImageCacheOptions {
  engine: Pick<Engine, 'listImages' | 'removeImage' | 'pruneImages'>;
  /** The images of this worker are those labelled LABEL_BUILT_BY=<workerId>. */
  workerId: string;
  /** Bound of the sizes of the worker's images (--image-cache-size). */
  maxBytes: number;
  /** JSON file of the last use of each image (<state-dir>/image-cache.json). */
  file: string;
}

export interface CacheSummary {
  images: number;
  bytes: number;
  maxBytes: number;
}

export interface TrimResult extends CacheSummary {
  /** Names removed, least recently used first. */
  removed: string[];
  /** Names over the bound that were kept: a task of this worker, or a container of any, uses them. */
  kept: string[];
}

/**
 * The images this worker built, bounded in size. It knows its images by their worker
 * label (so it survives restarts), and their last use from a small file in the state
 * folder (images without a record count from their creation). Trimming removes the least
 * recently used images that no task holds, never an image a container uses (the engine
 * refuses, whoever's container it is), and the dangling layers of failed builds.
 */
export class ImageCache {
  private readonly holds = new Map<string, number>();
  private readonly removing = new Map<string, Promise<unknown>>();
  private lastUsed?: Map<string, number>;
  private builds = 0;
  private trimming: Promise<unknown> = Promise.resolve();
  /** What the last trim left: the metrics read it, as a scrape must not ask the engine. */
  lastSummary?: CacheSummary;
  private saving: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ImageCacheOptions) {}

  /** The label every image this worker builds carries. */
  get label(): Record<string, string> {
    return { [LABEL_BUILT_BY]: this.options.workerId };
  }

  /**
   * Marks an image in use until the returned release is called, and records its use.
   * When a trim is removing it right now, waits for that: it is then built again.
   */
  async hold(image: string): Promise<() => void> {
    this.holds.set(image, (this.holds.get(image) ?? 0) + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const left = (this.holds.get(image) ?? 1) - 1;
      if (left > 0) this.holds.set(image, left);
      else this.holds.delete(image);
      void this.touch(image).catch(() => {});
    };
    // The records only order removals: failing to write them fails no task (a trim says it).
    await this.touch(image).catch(() => {});
    await this.removing.get(image)?.catch(() => {});
    return release;
  }

  /**
   * Runs a build of this worker. While one runs, trims leave dangling images alone: the
   * latest layer of a build in progress is one (no name, no child yet) and carries the label.
   */
  async building<T>(build: Promise<T>): Promise<T> {
    this.builds++;
    try {
      return await build;
    } finally {
      this.builds--;
    }
  }

  isHeld(image: string): boolean {
    return this.holds.has(image);
  }

  /** Brings the cache back under its bound. Trims run one after another. */
  trim(): Promise<TrimResult> {
    const next = this.trimming.then(() => this.trimOnce());
    this.trimming = next.catch(() => {});
    return next;
  }

  async summary(): Promise<CacheSummary> {
    const images = await this.images();
    return {
      images: images.length,
      bytes: images.reduce((sum, image) => sum + image.sizeBytes, 0),
      maxBytes: this.options.maxBytes,
    };
  }

  private async images(): Promise<ImageFacts[]> {
    return (await this.options.engine.listImages(this.label)).filter((i) => i.names.length > 0);
  }

  private async trimOnce(): Promise<TrimResult> {
    const { engine, maxBytes } = this.options;
    if (this.builds === 0) await engine.pruneImages(this.label);
    const images = await this.images();
    const lastUsed = await this.load();
    const usedAt = (image: ImageFacts) =>
      Math.max(image.createdMs, ...image.names.map((name) => lastUsed.get(name) ?? 0));
    let bytes = images.reduce((sum, image) => sum + image.sizeBytes, 0);
    let count = images.length;
    const removed: string[] = [];
    const kept: string[] = [];
    const oldestFirst = [...images].sort((a, b) => usedAt(a) - usedAt(b));
    for (const image of oldestFirst) {
      if (bytes <= maxBytes) break;
      // Checked and marked at once (no await between): a hold either sees the removal or
      // comes first and stops it.
      if (image.names.some((name) => this.isHeld(name))) {
        kept.push(...image.names);
        continue;
      }
      const removal = this.removeAll(image.names);
      for (const name of image.names) this.removing.set(name, removal);
      const outcome = await removal.finally(() => {
        for (const name of image.names) this.removing.delete(name);
      });
      if (outcome.every((o) => o !== 'kept')) {
        bytes -= image.sizeBytes;
        count--;
        removed.push(...image.names);
        for (const name of image.names) lastUsed.delete(name);
      } else {
        kept.push(...image.names);
      }
    }
    // Records of images that are gone are dropped.
    const names = new Set(images.flatMap((image) => image.names));
    for (const name of lastUsed.keys()) {
      if (!names.has(name) && !this.isHeld(name)) lastUsed.delete(name);
    }
    await this.save();
    this.lastSummary = { images: count, bytes, maxBytes };
    return { images: count, bytes, maxBytes, removed, kept };
  }

  private async removeAll(names: string[]): Promise<Array<'removed' | 'kept' | 'missing'>> {
    const outcome: Array<'removed' | 'kept' | 'missing'> = [];
    for (const name of names) outcome.push(await this.options.engine.removeImage(name));
    return outcome;
  }

  private async touch(image: string): Promise<void> {
    (await this.load()).set(image, Date.now());
    await this.save();
  }

  private async load(): Promise<Map<string, number>> {
    if (this.lastUsed) return this.lastUsed;
    let entries: Record<string, number> = {};
    try {
      const parsed = recordSchema.safeParse(JSON.parse(await readFile(this.options.file, 'utf8')));
      // A damaged file costs only the order of removal: images fall back to their age.
      if (parsed.success) entries = parsed.data.lastUsed;
    } catch (error) {
      if (!(error instanceof SyntaxError) && (error as NodeJS.ErrnoException).code !== 'ENOENT')
        throw error;
    }
    this.lastUsed ??= new Map(Object.entries(entries));
    return this.lastUsed;
  }

  /** Writes go one after another, each whole (a temp file renamed over the old one). */
  private save(): Promise<void> {
    const write = async () => {
      const lastUsed = Object.fromEntries(this.lastUsed ?? []);
      const temp = `${this.options.file}.tmp`;
      await writeFile(temp, `${JSON.stringify({ version: 1, lastUsed })}\n`, { mode: 0o600 });
      await rename(temp, this.options.file);
    };
    const next = this.saving.then(write);
    this.saving = next.catch(() => {});
    return next;
  }
}
