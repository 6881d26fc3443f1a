import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execEngineRaw } from '../../src/engine/exec.js';
import { ImageCache } from '../../src/engine/image-cache.js';
import { LABEL_BUILT_BY } from '../../src/engine/labels.js';
import type { TaskEnv } from '../../src/tasks/context.js';
import { busyboxContext } from '../support/busybox-context.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  newIds,
  podmanMissing,
  runTask,
  startWorld,
  type TaskWorld,
  tarGz,
} from '../support/task-fixtures.js';

/**
 * A task labels the images it builds with its worker's id and trims the worker's cache
 * when it ends. The submission is a busybox context of this run only, so the trim touches
 * no image another test uses.
 */
describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'image cache in a task',
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    let dir: string;
    const ids = newIds('algo', 'model');
    const run = randomBytes(4).toString('hex');
    let env: TaskEnv | undefined;

    beforeAll(async () => {
      world = await startWorld();
      dir = await mkdtemp(join(tmpdir(), 'cw-imgcache-task-'));
      world.storage.seed('algo', ids.algo, {
        blob: await busyboxContext({ extraLines: [`ENV CACHE_TASK_TEST=${run}`] }),
      });
      world.storage.seed('model', ids.model, {
        blob: await tarGz({ 'model.txt': 'm\n' }),
        meta: { uuid: ids.model, algo: ids.algo, timestamp_upload: 1 },
      });
    });

    afterAll(async () => {
      // What a failed assertion left: only the images labelled with this test's worker id.
      if (env) {
        for (const image of await env.engine.listImages({ [LABEL_BUILT_BY]: env.workerId })) {
          await execEngineRaw(env.engine.info, ['rmi', '--force', image.id], { timeoutMs: 60_000 });
        }
      }
      await world?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    // The data is missing: the task fails in `stage`, after its image was built.
    const predict = () => ({ ...newIds('uuid', 'data'), model: ids.model });

    it('labels the image with the worker id, and removes it after a task once over the bound', async () => {
      const base = await world.env();
      env = base;
      const cacheOf = (env: TaskEnv, maxBytes: number) =>
        new ImageCache({
          engine: env.engine,
          workerId: env.workerId,
          maxBytes,
          file: join(dir, 'image-cache.json'),
        });
      const roomy = { ...base, imageCache: cacheOf(base, 2 ** 40) };
      const first = await runTask(world, roomy, predict());
      expect(first.report.failedStep).toBe('stage');
      const images = await base.engine.listImages({ [LABEL_BUILT_BY]: base.workerId });
      expect(images).toHaveLength(1);
      const image = images[0]?.names[0] as string;
      expect(image).toMatch(/^localhost\/compute-worker\/submission:[0-9a-f]{64}$/);
      const record = JSON.parse(await readFile(join(dir, 'image-cache.json'), 'utf8'));
      expect(Object.keys(record.lastUsed)).toEqual([image]);

      // The same worker, restarted with a bound its one image does not fit.
      const tight = { ...base, imageCache: cacheOf(base, 1) };
      const second = await runTask(world, tight, predict());
      expect(second.report.failedStep).toBe('stage');
      expect(second.events).toContainEqual(
        expect.objectContaining({
          type: 'step-end',
          step: 'build-submission',
          note: `${image} (cached)`,
        }),
      );
      expect(await base.engine.listImages({ [LABEL_BUILT_BY]: base.workerId })).toEqual([]);
      const exists = await execEngineRaw(base.engine.info, ['image', 'exists', image], {
        timeoutMs: 60_000,
      });
      expect(exists.exitCode).toBe(1);
    });
  },
);
