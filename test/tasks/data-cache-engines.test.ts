import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDirLabel } from '../../src/tasks/data-cache.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';
import {
  learnTaskJson,
  newIds,
  type Outcome,
  readTarGz,
  runTask,
  seedRunner,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

// The data cache with the other local engines: rootless podman (its volumes are the
// rootless user's, each container of a task in an id range of its own) and docker.
const MIB = 1024 ** 2;

const script = (text: string) => Buffer.from(`${text}\nexit 0\n`);

describe.each([VARIANTS['podman-rootless'], VARIANTS.docker])(
  'data staged once per host ($id)',
  (variant) => {
    describe.skipIf(unavailableUnlessRequired(variant))(
      'with the cache on',
      { timeout: 300_000 },
      () => {
        let world: TaskWorld;
        let runner = '';
        let dir = '';

        beforeAll(async () => {
          world = await startWorld('p', variant.options);
          runner = await seedRunner(world);
          dir = await mkdtemp(join(tmpdir(), `cw-data-cache-${variant.id}-`));
        });

        afterAll(async () => {
          if (world) {
            const env = await world.env();
            const left = await env.engine.listVolumes(cacheDirLabel(dir));
            await env.engine.removeVolumes(left.map((v) => v.name));
            await world.close();
          }
          await rm(dir, { recursive: true, force: true });
        });

        const data = (blob: Buffer) => {
          const { uuid } = newIds('uuid');
          world.storage.seed('data', uuid, { blob });
          return uuid;
        };

        it('a second task mounts the cached sets read-only and learns the same', async () => {
          const train = [
            data(
              script(
                [
                  'echo "model" > /data/model/model.txt',
                  'if touch /data/train/probe 2>/dev/null; then echo writable; else echo read-only; fi > /data/model/seen.txt',
                ].join('\n'),
              ),
            ),
          ];
          const test = [
            data(
              script(
                `echo '{"perf": 0.5, "train_perf": {}, "test_perf": {}}' > /hidden_data/perf/performance.json`,
              ),
            ),
          ];
          const learn = () => learnTaskJson(runner, train, test);
          const env = await world.env({ dataCache: { dir, maxBytes: 64 * MIB } });
          const outcomes: Outcome[] = [];
          for (let i = 0; i < 2; i++) outcomes.push(await runTask(world, env, learn()));
          for (const o of outcomes) {
            expect(o.report.error?.describe()).toBeUndefined();
            expect(o.report.performance?.perf).toBe(0.5);
            const model = world.storage.blob('model', o.report.modelUuid as string) as Buffer;
            const seen = (await readTarGz(model)).find((e) => e.name.endsWith('seen.txt'));
            expect(seen?.content).toBe('read-only\n');
          }
          const note = outcomes[1]?.report.steps.find((s) => s.step === 'stage')?.note;
          expect(note).toBe('0 bytes (cached: train, hiddenTest)');
        });
      },
    );
  },
);
