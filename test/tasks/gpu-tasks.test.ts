import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGpuList } from '../../src/gpu/discover.js';
import { GpuPool } from '../../src/gpu/pool.js';
import { createLogger } from '../../src/log.js';
import { parseTask } from '../../src/schemas.js';
import type { TaskEnv, TaskEvent } from '../../src/tasks/context.js';
import { acquireTaskGpus } from '../../src/tasks/gpus.js';
import { executeTask } from '../../src/tasks/run-task.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  FAKE_GPU_BUSY_PERCENT,
  FAKE_GPU_USED_MIB,
  type FakeGpus,
  makeFakeGpus,
  withPath,
} from '../support/fake-gpus.js';
import {
  leftovers,
  newIds,
  podmanMissing,
  prebuild,
  scriptRunnerContext,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

// Learn tasks with --learn-gpus 1: each holds its own GPU for as long as its containers
// exist, its submission sees exactly that device, the workflow sees none, and a task
// that times out gives its GPU back to the next one.

const SEE = (who: string) =>
  `for f in /dev/nvidia*; do [ -e "$f" ] && echo "${who}-sees=$f"; done\n`;
const PERF = `${SEE('perf')}echo '{"perf": 1, "train_perf": {}, "test_perf": {}}' >/hidden_data/perf/performance.json\n`;

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'GPUs of learn tasks',
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    let gpus: FakeGpus;
    const ids = newIds('runner', 'perf');

    beforeAll(async () => {
      gpus = await makeFakeGpus({ count: 2 });
      world = await startWorld();
      const runner = await scriptRunnerContext();
      world.storage.seed('problem', ids.runner, { blob: runner });
      world.storage.seed('algo', ids.runner, { blob: runner });
      world.storage.seed('data', ids.perf, { blob: PERF });
      await prebuild(await world.env(), [
        ['workflow', runner],
        ['submission', runner],
      ]);
    });

    afterAll(async () => {
      await world?.close();
      await gpus?.remove();
    });

    async function gpuEnv(count: number, overrides: Partial<TaskEnv> = {}): Promise<TaskEnv> {
      const found = parseGpuList(
        gpus.uuids.map((u, i) => `${i}, ${u}, Fake, 580.0, 1 MiB`).join('\n'),
      );
      return world.env({
        gpus: {
          pool: new GpuPool(found.slice(0, count)),
          learn: 1,
          predict: 0,
          cdiKind: gpus.kind,
        },
        // In a user namespace runc binds a device node from the host path the container
        // sees it at (/dev/nvidia0), which the fake GPUs do not have (docs/gpus.md).
        userns: undefined,
        ...overrides,
      });
    }

    /** As the daemon and task exec do: the GPUs are held from before the task to after its cleanup. */
    async function learn(env: TaskEnv, trainScript: string) {
      const { uuid: train } = newIds('uuid');
      world.storage.seed('data', train, { blob: trainScript });
      const json = {
        ...newIds('uuid', 'model_end'),
        workflow: ids.runner,
        algo: ids.runner,
        train_data: [train],
        test_data: [ids.perf],
        model_start: null,
        rank: 0,
      };
      world.orchestrator.addTask('learnuplet', json.uuid, 'pending');
      const events: TaskEvent[] = [];
      const lease = acquireTaskGpus(env, 'learn');
      const report = await executeTask(
        env,
        { signal: new AbortController().signal, onEvent: (e) => events.push(e), gpus: lease.gpus },
        parseTask(json),
        createLogger({ level: 'warn', format: 'json' }),
      ).finally(() => lease.release());
      const lines = events.flatMap((e) => (e.type === 'log' ? [e.line] : []));
      return { report, lines, held: lease.gpus.map((g) => g.uuid) };
    }

    it('two tasks at once, pool of two: each submission sees its own single GPU, the workflow none', async () => {
      const env = await gpuEnv(2);
      // The host's nvidia-smi (the stand-in) reports both GPUs half busy.
      const [a, b] = await withPath(gpus.path, () =>
        Promise.all([
          learn(env, `${SEE('train')}sleep 3\n`),
          learn(env, `${SEE('train')}sleep 3\n`),
        ]),
      );
      for (const task of [a, b]) {
        expect(task.report.status, task.report.error?.describe()).toBe('done');
        expect(task.held).toHaveLength(1);
        const index = gpus.uuids.indexOf(task.held[0] as string);
        expect(task.lines.filter((l) => l.includes('-sees='))).toEqual([
          `train-sees=/dev/nvidia${index}`,
        ]);
        expect(task.report.gpus).toEqual([`${index}:${task.held[0]}`]);
        // Usage names the task's own GPU only, and only for the submission's step.
        const { detarget, train, perf } = task.report.usage ?? {};
        expect(detarget?.gpus).toBeUndefined();
        expect(perf?.gpus).toBeUndefined();
        expect(train?.gpus).toEqual([
          {
            uuid: task.held[0],
            busy_s: expect.any(Number),
            peak_memory_bytes: FAKE_GPU_USED_MIB * 1024 ** 2,
          },
        ]);
        const busy = train?.gpus?.[0]?.busy_s ?? 0;
        const half = (train?.wall_s ?? 0) * (FAKE_GPU_BUSY_PERCENT / 100);
        expect(busy).toBeGreaterThan(half * 0.5);
        expect(busy).toBeLessThan(half * 1.5);
        expect(await leftovers(task.report.uuid, env.tmpDir)).toEqual({
          containers: [],
          volumes: [],
          tmp: [],
        });
      }
      expect(a.held[0]).not.toBe(b.held[0]);
      expect(env.gpus?.pool.free).toBe(2);
    });

    it('a task that times out gives its GPU to the next', async () => {
      const env = await gpuEnv(1, { learnTimeoutMs: 3000 });
      const stuck = await learn(env, `${SEE('train')}sleep 60\n`);
      expect(stuck.report.error?.code).toBe('CONTAINER_TIMEOUT');
      expect(env.gpus?.pool.free).toBe(1);
      // The same pool, a task with time enough on a loaded machine.
      const next = await learn(
        await world.env({ gpus: env.gpus, userns: undefined }),
        SEE('train'),
      );
      expect(next.report.status, next.report.error?.describe()).toBe('done');
      expect(next.held).toEqual(stuck.held);
      expect(next.lines.filter((l) => l.includes('-sees='))).toEqual(['train-sees=/dev/nvidia0']);
    });
  },
);
