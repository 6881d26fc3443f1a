import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ImageCache } from '../../src/engine/image-cache.js';
import type { ImageFacts } from '../../src/engine/types.js';

/**
 * The cache's own rules, against an engine stand-in whose images and answers the test
 * sets (the real engine is in test/engine/image-cache.test.ts).
 */
describe('ImageCache', () => {
  let dir: string;
  let images: ImageFacts[];
  let calls: string[];
  let removal: { resolve: () => void } | undefined;

  const image = (name: string, createdMs: number): ImageFacts => ({
    id: name,
    names: [name],
    sizeBytes: 100,
    createdMs,
    labels: {},
  });

  const engine = {
    listImages: async () => images,
    pruneImages: async () => {
      calls.push('prune');
    },
    removeImage: async (name: string) => {
      calls.push(`rmi ${name}`);
      if (removal) await new Promise<void>((resolve) => (removal = { resolve }));
      images = images.filter((i) => !i.names.includes(name));
      return 'removed' as const;
    },
  };
  const cache = (maxBytes: number) =>
    new ImageCache({ engine, workerId: 'w', maxBytes, file: join(dir, 'image-cache.json') });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-imgcache-unit-'));
    images = [image('a', 1), image('b', 2), image('c', 3)];
    calls = [];
    removal = undefined;
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('without records, removes the oldest images first, down to the bound', async () => {
    const result = await cache(150).trim();
    expect(result).toMatchObject({ removed: ['a', 'b'], images: 1, bytes: 100, maxBytes: 150 });
    expect(calls).toEqual(['prune', 'rmi a', 'rmi b']);
  });

  it('a damaged record file only loses the order of use', async () => {
    await writeFile(join(dir, 'image-cache.json'), '{"version":1,"lastUsed":');
    expect((await cache(250).trim()).removed).toEqual(['a']);
    const saved = JSON.parse(await readFile(join(dir, 'image-cache.json'), 'utf8'));
    expect(saved).toEqual({ version: 1, lastUsed: {} });
  });

  it('leaves dangling images alone while a build of this worker runs', async () => {
    const c = cache(1000);
    let finish!: () => void;
    const build = c.building(new Promise<void>((resolve) => (finish = resolve)));
    await c.trim();
    expect(calls).toEqual([]);
    finish();
    await build;
    await c.trim();
    expect(calls).toEqual(['prune']);
  });

  it('a hold that comes while its image is being removed waits for the removal', async () => {
    const c = cache(250);
    removal = { resolve: () => {} };
    const trimming = c.trim();
    // The trim is now inside the removal of `a`.
    while (!calls.includes('rmi a')) await new Promise((resolve) => setImmediate(resolve));
    let held = false;
    const hold = c.hold('a').then((release) => {
      held = true;
      return release;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(held).toBe(false);
    removal.resolve();
    removal = undefined;
    (await hold)();
    expect(held).toBe(true);
    expect((await trimming).removed).toEqual(['a']);
    // A held image is never a candidate.
    images = [image('a', 1), image('b', 2), image('c', 3)];
    const release = await c.hold('a');
    expect((await c.trim()).removed).toEqual(['b']);
    release();
  });
});
