import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABEL_TASK } from '../../src/engine/labels.js';
import { requireEngines, VARIANTS } from '../support/engine-variants.js';
import { PODMAN, type PodmanService, startPodmanService } from '../support/podman-service.js';
import {
  doneReports,
  exampleContext,
  exampleData,
  LEARN_STEPS,
  newIds,
  runTask,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

// A learn task end to end with every engine call going to podman's service on a unix
// socket (its own storage), as a worker drives an engine on another host.

const variant = VARIANTS['podman-remote'];
const why = variant.unavailable();

describe.skipIf(why !== undefined && !requireEngines)(
  'a learn task through a remote podman',
  { timeout: 300_000 },
  () => {
    let service: PodmanService;
    let world: TaskWorld;
    const ids = newIds('workflow', 'algo', 'train', 'test');

    beforeAll(async () => {
      service = await startPodmanService();
      world = await startWorld('p', variant.options);
      const [problem, submission] = await Promise.all([
        exampleContext('problem'),
        exampleContext('submission'),
      ]);
      world.storage.seed('problem', ids.workflow, { blob: problem });
      world.storage.seed('algo', ids.algo, { blob: submission });
      world.storage.seed('data', ids.train, { blob: await exampleData('train-1.csv') });
      world.storage.seed('data', ids.test, { blob: await exampleData('test.csv') });
    });

    afterAll(async () => {
      await world?.close();
      await service?.stop();
    });

    /** What the service holds with this task's label: nothing is left there either. */
    async function remoteLeftovers(uuid: string) {
      const remote = ['--remote', '--url', service.url];
      const filter = ['--filter', `label=${LABEL_TASK}=${uuid}`];
      const ps = await execa(PODMAN, [...remote, 'ps', '-a', '-q', ...filter]);
      const vols = await execa(PODMAN, [...remote, 'volume', 'ls', '-q', ...filter]);
      return { containers: ps.stdout.trim(), volumes: vols.stdout.trim() };
    }

    it('learns, uploads the model and reports done; the engine work happened in the service', async () => {
      const task = {
        ...newIds('uuid', 'model_end'),
        problem: ids.workflow,
        workflow: ids.workflow,
        algo: ids.algo,
        train_data: [ids.train],
        test_data: [ids.test],
        model_start: null,
        rank: 0,
        worker: null,
        status: 'todo',
        timestamp_creation: 1510000000,
      };
      const env = await world.env();
      const logFrom = service.log().length;
      const learned = await runTask(world, env, task);
      expect(learned.report.error?.describe()).toBeUndefined();
      expect(learned.report.status).toBe('done');
      expect(learned.report.steps.map((s) => s.step)).toEqual(LEARN_STEPS);
      const [done] = doneReports(world, task.uuid);
      expect(done?.status).toBe(200);
      expect((done?.body as Record<string, unknown> | undefined)?.perf).toBeGreaterThan(0.5);
      expect(world.storage.blob('model', task.model_end)?.length).toBeGreaterThan(0);

      // The images were built by the service into its own storage, the containers and the
      // volumes' copies were its API requests, and nothing of the task is left there.
      const log = service.log().slice(logFrom);
      expect(log.match(/"POST \/v[\d.]+\/libpod\/build\?/g)?.length).toBeGreaterThanOrEqual(2);
      expect(log).toMatch(/"POST \/v[\d.]+\/libpod\/containers\/create /);
      expect(log).toMatch(/"PUT \/v[\d.]+\/libpod\/containers\/cw-helper-[0-9a-f]+\/archive\?/);
      const images = await execa(PODMAN, [
        ...service.storageArgs,
        'images',
        '--format',
        '{{.Repository}}',
      ]);
      expect(images.stdout.split('\n')).toEqual(
        expect.arrayContaining([
          'localhost/compute-worker/workflow',
          'localhost/compute-worker/submission',
        ]),
      );
      expect(await remoteLeftovers(task.uuid)).toEqual({ containers: '', volumes: '' });
    });
  },
);
