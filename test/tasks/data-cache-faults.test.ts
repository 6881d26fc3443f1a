import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlobValidators } from '../../src/clients/blob-validators.js';
import type { StorageClient } from '../../src/clients/types.js';
import { createLogger } from '../../src/log.js';
import { cacheDirLabel, sweepDataCache } from '../../src/tasks/data-cache.js';
import { unavailableUnlessRequired } from '../support/engine-variants.js';
import {
  learnTaskJson,
  newIds,
  type Outcome,
  podman,
  readTarGz,
  runTask,
  seedRunner,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

const MIB = 1024 ** 2;
const cli = podman.options.enginePath as string;
const padded = (script: string, pad = 0) =>
  Buffer.concat([Buffer.from(`${script}\nexit 0\n`), Buffer.alloc(pad, 'x')]);
const trainer = (word: string, pad = 0) =>
  padded(
    `echo "model ${word}" > /data/model/model.txt; ls -la /data/train > /data/model/ls.txt`,
    pad,
  );
const scorer = (perf: number, pad = 0) =>
  padded(
    `echo '{"perf": ${perf}, "train_perf": {}, "test_perf": {}}' > /hidden_data/perf/performance.json`,
    pad,
  );

async function entries(dir: string) {
  const names = await readdir(join(dir, 'entries')).catch(() => [] as string[]);
  return Promise.all(
    names.map(async (n) => JSON.parse(await readFile(join(dir, 'entries', n), 'utf8'))),
  );
}

/** A storage client whose header probe answers what `lie` makes of the true answer. */
function lyingProbe(
  storage: StorageClient,
  lie: (uuid: string, real: BlobValidators) => BlobValidators,
): StorageClient {
  const probe = storage.blobValidators?.bind(storage);
  if (!probe) throw new Error('this storage gives no validators');
  const wrapped = Object.create(storage) as StorageClient;
  wrapped.blobValidators = async (kind, uuid, signal) => lie(uuid, await probe(kind, uuid, signal));
  return wrapped;
}

const err = (o: Outcome) => o.report.error && `${o.report.error.code}: ${o.report.error.message}`;

/**
 * The host's data cache when the engine, storage or a second platform does not play along:
 * a volume the engine lost, a set larger than storage announced, the same uuid on another
 * storage. Each is staged again, kept within the bound, kept apart.
 */
describe.skipIf(unavailableUnlessRequired(podman))(
  'the data cache against lost volumes, sizes and other storages',
  { timeout: 600_000 },
  () => {
    let world: TaskWorld;
    let worldB: TaskWorld;
    let runner = '';
    let runnerB = '';
    const dirs: string[] = [];

    beforeAll(async () => {
      world = await startWorld();
      worldB = await startWorld();
      runner = await seedRunner(world);
      runnerB = await seedRunner(worldB);
    });

    afterAll(async () => {
      for (const dir of dirs) {
        const env = await world.env();
        for (const v of await env.engine.listVolumes(cacheDirLabel(dir)))
          await execa(cli, ['volume', 'rm', '--force', v.name]);
        await rm(dir, { recursive: true, force: true });
      }
      await world?.close();
      await worldB?.close();
    });

    async function newDir() {
      const d = await mkdtemp(join(tmpdir(), 'cw-cache-faults-'));
      dirs.push(d);
      return d;
    }
    const data = (w: TaskWorld, blob: Buffer, uuid = newIds('uuid').uuid) => {
      w.storage.seed('data', uuid, { blob });
      return uuid;
    };

    it('stages a set again whose volume the engine lost, also after a restart sweep', async () => {
      const dir = await newDir();
      const env = await world.env({ dataCache: { dir, maxBytes: 1024 * MIB } });
      const train = [data(world, trainer('v1'))];
      const test = [data(world, scorer(0.5))];
      const first = await runTask(world, env, learnTaskJson(runner, train, test));
      expect(err(first)).toBeUndefined();
      const trainEntry = (await entries(dir)).find((e) => e.uuids[0] === train[0]);
      // What `podman volume prune` (or an operator, or `podman system reset`) does.
      await execa(cli, ['volume', 'rm', trainEntry.volume]);
      for (let i = 0; i < 2; i++) {
        const o = await runTask(world, env, learnTaskJson(runner, train, test));
        expect(err(o)).toBeUndefined();
        expect(o.report.status).toBe('done');
      }
      // Lost again, then a restart: its sweep forgets the set, and the next task stages it.
      const again = (await entries(dir)).find((e) => e.uuids[0] === train[0]);
      await execa(cli, ['volume', 'rm', again.volume]);
      await sweepDataCache(env, createLogger({ level: 'error', format: 'json' }));
      expect((await entries(dir)).map((e) => e.volume)).not.toContain(again.volume);
      const after = await runTask(world, env, learnTaskJson(runner, train, test));
      expect(err(after)).toBeUndefined();
    });

    it('keeps the cache within its bound when storage sends more than it announced', async () => {
      const dir = await newDir();
      const env = await world.env({ dataCache: { dir, maxBytes: 1 * MIB } });
      env.storage = lyingProbe(env.storage, (_u, real) => ({ ...real, size: 10 }));
      const train = [data(world, trainer('big', 8 * MIB))];
      const test = [data(world, scorer(0.5, 8 * MIB))];
      const o = await runTask(world, env, learnTaskJson(runner, train, test));
      expect(err(o)).toBeUndefined();
      const es = await entries(dir);
      const total = es.reduce((s, e) => s + e.bytes, 0);
      // A second task with the honest client reuses the over-size sets.
      const env2 = await world.env({ dataCache: { dir, maxBytes: 1 * MIB } });
      const again = await runTask(world, env2, learnTaskJson(runner, train, test));
      expect(err(again)).toBeUndefined();
      expect(total).toBeLessThanOrEqual(1 * MIB);
      expect(await env2.engine.listVolumes(cacheDirLabel(dir))).toEqual([]);
    });

    it('never gives a set of one storage to a task of another, whatever its ETag says', async () => {
      const dir = await newDir();
      const envA = await world.env({ dataCache: { dir, maxBytes: 1024 * MIB } });
      const secret = data(world, trainer('SECRET-OF-PLATFORM-A'));
      const testA = [data(world, scorer(0.5))];
      expect(
        err(await runTask(world, envA, learnTaskJson(runner, [secret], testA))),
      ).toBeUndefined();
      const rec = (await entries(dir)).find((e) => e.uuids[0] === secret).blobs[0];
      // Platform B: another storage, the same uuid, other bytes; its probe answers the same
      // strong ETag and length as A's (e.g. an nginx-style mtime-size ETag), no digest.
      data(worldB, trainer('platform-b-own-data'), secret);
      const envB = await worldB.env({ dataCache: { dir, maxBytes: 1024 * MIB } });
      envB.storage = lyingProbe(envB.storage, (u, real) =>
        u === secret ? { etag: rec.etag, size: rec.size } : real,
      );
      const testB = [data(worldB, scorer(0.5))];
      const o = await runTask(worldB, envB, learnTaskJson(runnerB, [secret], testB));
      expect(err(o)).toBeUndefined();
      const model = worldB.storage.blob('model', o.report.modelUuid as string) as Buffer;
      const seen = (await readTarGz(model)).find((e) => e.name.endsWith('model.txt'))?.content;
      expect(seen).not.toContain('SECRET-OF-PLATFORM-A');
    });
  },
);
