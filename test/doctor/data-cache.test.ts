import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { dataCacheCheck } from '../../src/doctor/data-cache.js';
import { LABEL_DATA_CACHE } from '../../src/engine/labels.js';
import type { Engine } from '../../src/engine/types.js';
import { cacheDirLabel, cacheVolumeName } from '../../src/tasks/data-cache.js';
import { type DataCacheEntry, writeEntry } from '../../src/tasks/data-cache-index.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];
const MIB = 1024 ** 2;

describe.skipIf(unavailableUnlessRequired(variant))("doctor's data-cache check", () => {
  const root = mkdtempSync(join(tmpdir(), 'cw-doctor-cache-'));
  const volumes: string[] = [];
  let engine: Engine;

  beforeAll(async () => {
    engine = await createEngine(variant.options);
  });
  afterAll(async () => {
    if (engine) await engine.removeVolumes(volumes);
    rmSync(root, { recursive: true, force: true });
  });

  /** A cache folder with one set of `bytes`, its volume made unless `volume` is false. */
  async function cacheWith(set: { bytes: number; complete?: boolean; volume?: boolean }) {
    const dir = join(root, randomBytes(4).toString('hex'));
    mkdirSync(dir);
    const key = randomBytes(32).toString('hex');
    const name = cacheVolumeName(key);
    if (set.volume !== false) {
      volumes.push(
        await engine.createVolume({ [LABEL_DATA_CACHE]: key, ...cacheDirLabel(dir) }, name),
      );
    }
    const entry: DataCacheEntry = {
      key,
      volume: name,
      uuids: ['u'],
      owner: '1000:1000',
      dirs: ['train'],
      blobs: [],
      bytes: set.bytes,
      lastUsedMs: Date.now(),
      complete: set.complete ?? true,
    };
    await writeEntry(dir, entry);
    return dir;
  }

  it('is skipped when the cache is off, and passes a folder the worker will make', async () => {
    expect((await dataCacheCheck(engine, undefined)).status).toBe('skip');
    const later = join(root, 'not-yet', 'cache');
    const check = await dataCacheCheck(engine, { dir: later, maxBytes: 64 * MIB });
    expect(check).toMatchObject({
      status: 'pass',
      message: `${later}: empty, made when the worker starts`,
    });
  });

  it('counts the sets and their bytes against --data-cache-size', async () => {
    const dir = await cacheWith({ bytes: 3 * MIB });
    const check = await dataCacheCheck(engine, { dir, maxBytes: 64 * MIB });
    expect(check).toMatchObject({ status: 'pass', message: `${dir}: 1 set, 3.0 MiB of 64m` });
    const over = await dataCacheCheck(engine, { dir, maxBytes: 1 * MIB });
    expect(over.status).toBe('warn');
    expect(over.message).toMatch(/over its bound$/);
  });

  it('warns of a set whose volume the engine lost, and of a killed staging', async () => {
    const lost = await cacheWith({ bytes: MIB, volume: false });
    const check = await dataCacheCheck(engine, { dir: lost, maxBytes: 64 * MIB });
    expect(check.status).toBe('warn');
    expect(check.message).toMatch(/the volumes of 1 of them are gone from the engine/);
    const killed = await cacheWith({ bytes: MIB, complete: false });
    const left = await dataCacheCheck(engine, { dir: killed, maxBytes: 64 * MIB });
    expect(left.status).toBe('warn');
    expect(left.message).toMatch(/1 unfinished set of killed stagings/);
  });
});
