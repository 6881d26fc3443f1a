import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BUILD_DISK_INTERVAL_MS, watchBuildDisk } from '../../src/build/disk.js';
import type { EngineContext } from '../../src/engine/context.js';

const MIB = 1024 ** 2;
const LIMIT = 5 * MIB;
const id = (c: string) => c.repeat(64);

/**
 * A build's own overlay store as buildah leaves it in the moment after the final commit
 * made its image and before it names it: stage one's working container and image (1 MiB
 * each), stage two's working container (2 MiB) and the final image's copy of it (2 MiB).
 */
function storeAtFinalCommit(root: string): { name: () => void } {
  const layer = (layerId: string, bytes: number) => {
    mkdirSync(join(root, 'overlay', layerId, 'diff'), { recursive: true });
    writeFileSync(join(root, 'overlay', layerId, 'diff', 'f'), Buffer.alloc(bytes, 1));
  };
  const base = id('b');
  const [c1, i1, c2, fin] = [id('1'), id('2'), id('3'), id('4')];
  for (const [l, bytes] of [
    [c1, MIB],
    [i1, MIB],
    [c2, 2 * MIB],
    [fin, 2 * MIB],
  ] as const) {
    layer(l, bytes);
  }
  const json = (dir: string, file: string, value: unknown) => {
    mkdirSync(join(root, dir), { recursive: true });
    writeFileSync(join(root, dir, file), JSON.stringify(value));
  };
  json('overlay-layers', 'layers.json', [
    { id: c1, parent: base },
    { id: i1, parent: base },
    { id: c2, parent: i1 },
    { id: fin, parent: i1 },
  ]);
  json('overlay-containers', 'containers.json', [
    { id: id('c'), layer: c1 },
    { id: id('d'), layer: c2 },
  ]);
  const images = (finalNames: string[]) => [
    { id: id('e'), layer: i1, names: [] },
    { id: id('f'), layer: fin, names: finalNames },
  ];
  json('overlay-images', 'images.json', images([]));
  return {
    name: () => json('overlay-images', 'images.json', images(['localhost/built:latest'])),
  };
}

function contextFor(graphRoot: string): EngineContext {
  return {
    cli: { name: 'podman', path: 'podman' },
    info: { name: 'podman', graphRoot, storageDriver: 'overlay', imageStores: [] },
    options: {},
  } as unknown as EngineContext;
}

describe('a build watched in its own store', () => {
  let root = '';
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('is not stopped for the moment its final image has no name yet', async () => {
    root = mkdtempSync(join(tmpdir(), 'cw-disk-watch-'));
    const store = storeAtFinalCommit(root);
    const seen: number[] = [];
    const watch = watchBuildDisk(contextFor(root), 'mark', LIMIT, (b) => seen.push(b), {
      ownStore: true,
    });
    // Named just after the first measurement, as buildah names it milliseconds after.
    setTimeout(store.name, BUILD_DISK_INTERVAL_MS + 150);
    await new Promise((resolve) => setTimeout(resolve, 2 * BUILD_DISK_INTERVAL_MS + 500));
    await watch?.stop();
    expect(seen).toEqual([]);
  });

  it('is stopped when the unnamed image stays: a stage of its own', async () => {
    root = mkdtempSync(join(tmpdir(), 'cw-disk-watch-'));
    storeAtFinalCommit(root);
    const seen: number[] = [];
    const watch = watchBuildDisk(contextFor(root), 'mark', LIMIT, (b) => seen.push(b), {
      ownStore: true,
    });
    await new Promise((resolve) => setTimeout(resolve, BUILD_DISK_INTERVAL_MS + 1500));
    await watch?.stop();
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBeGreaterThanOrEqual(6 * MIB);
  });
});
