import { readdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireEngines } from '../support/engine-variants.js';
import {
  doneReports,
  newIds,
  podmanMissing,
  runTask,
  seedRunner,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

// What the orchestrator hears of a task (SPEC.md section 7). A failed one: why, whose
// fault, the submission's last lines (never the workflow's, which sees the hidden
// targets), and no path of the worker's host. Done or failed: what it cost, read from the
// container's cgroup once it has ended and from the volumes it wrote.

const MIB = 1024 ** 2;
const root = process.getuid?.() === 0;

// Spins for 3 s, fills 100 MiB of /dev/shm (a tmpfs: charged to the container's memory),
// writes a 3 MiB model, then prints the CPU ticks of this shell and the children it waited
// for: what the container used, as the kernel counts it from the inside.
const TRAIN = `end=$(($(date +%s)+3)); while [ $(date +%s) -lt $end ]; do :; done
dd if=/dev/zero of=/dev/shm/fill bs=1M count=100 2>/dev/null
dd if=/dev/zero of=/data/model/weights bs=1M count=3 2>/dev/null
set -- $(cut -d' ' -f14-17 /proc/$$/stat)
echo "cpu-ticks $(($1 + $2 + $3 + $4))"
`;

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'what a report says',
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    let runner: string;

    beforeAll(async () => {
      world = await startWorld();
      runner = await seedRunner(world);
    });

    afterAll(() => world?.close());

    function data(content: string): string {
      const { uuid } = newIds('uuid');
      world.storage.seed('data', uuid, { blob: content });
      return uuid;
    }

    function learn(train: string, test = 'echo scoring\n') {
      return {
        ...newIds('uuid', 'model_end'),
        workflow: runner,
        algo: runner,
        train_data: [data(train)],
        test_data: [data(test)],
        model_start: null,
        rank: 0,
      };
    }

    it('a submission that prints 60 lines and exits 3 in train: the SPEC body, with its last 50 lines', async () => {
      const env = await world.env();
      const task = learn(
        'i=1; while [ $i -le 60 ]; do echo "epoch $i: loss 0.$i"; i=$((i+1)); done\nexit 3\n',
      );
      const { report } = await runTask(world, env, task);
      expect(report.status).toBe('failed');
      const bodies = doneReports(world, task.uuid).map((r) => r.body);
      // The body as an orchestrator gets it, for the documentation.
      process.stderr.write(`failed report: ${JSON.stringify(bodies[0])}\n`);
      const lines = Array.from({ length: 50 }, (_, i) => `epoch ${i + 11}: loss 0.${i + 11}`);
      expect(bodies).toEqual([
        {
          status: 'failed',
          error: {
            code: 'CONTAINER_FAILED',
            step: 'train',
            fault: 'task',
            message: "the submission's train step exited with code 3",
            retryable: false,
            attempts: 1,
            log_tail: lines,
          },
          usage: {
            worker: env.workerId,
            host: hostname(),
            steps: {
              detarget: expect.objectContaining({ wall_s: expect.any(Number) }),
              train: expect.objectContaining({ wall_s: expect.any(Number) }),
            },
          },
        },
      ]);
    });

    it("a failing workflow step: no log_tail, none of the workflow's output leaves the worker", async () => {
      const env = await world.env();
      // The runner as workflow runs the hidden test file in its perf step.
      const task = learn('echo training\n', 'echo "the hidden target of row 7 is 42"\nexit 4\n');
      const { report } = await runTask(world, env, task);
      expect(report.failedStep).toBe('perf');
      expect(report.error?.detail).toContain('hidden target');
      const [body] = doneReports(world, task.uuid).map((r) => r.body as Record<string, unknown>);
      expect(body?.error).toEqual({
        code: 'CONTAINER_FAILED',
        step: 'perf',
        fault: 'task',
        message: "the workflow's perf step exited with code 4",
        retryable: false,
        attempts: 1,
      });
      expect(JSON.stringify(body)).not.toContain('hidden target');
    });

    it("a message never names the worker's temp folder", async () => {
      const env = await world.env();
      // The task's own temp folder cannot be made: the error names the path.
      await rm(env.tmpDir, { recursive: true, force: true });
      const task = learn('echo training\n');
      const { report } = await runTask(world, env, task);
      expect(report.error?.message).toContain(env.tmpDir);
      const [body] = doneReports(world, task.uuid).map((r) => r.body as Record<string, unknown>);
      expect(body?.error).toMatchObject({ code: 'INTERNAL', fault: 'worker', retryable: true });
      const text = JSON.stringify(body);
      expect(text).not.toContain(env.tmpDir);
      expect(text).toContain('<host path>');
    });
    it.skipIf(!root && !requireEngines)(
      'reports the CPU time, memory peak and bytes written of the train step within 10%',
      async () => {
        const env = await world.env();
        const task = {
          ...newIds('uuid', 'model_end'),
          workflow: runner,
          algo: runner,
          train_data: [data(TRAIN)],
          test_data: [
            data(
              'echo \'{"perf": 1, "train_perf": {}, "test_perf": {}}\' >/hidden_data/perf/performance.json\n',
            ),
          ],
          model_start: null,
          rank: 0,
        };
        const before = new Set(
          await readdir('/sys/fs/cgroup/memory/compute-worker-run').catch(() => [] as string[]),
        );
        const { report, logs } = await runTask(world, env, task);
        expect(report.status, report.error?.describe()).toBe('done');
        const ticks = Number(/^cpu-ticks (\d+)$/m.exec(logs.join('\n'))?.[1]);
        expect(ticks).toBeGreaterThan(0);
        const [done] = doneReports(world, task.uuid);
        const usage = (
          (done?.body ?? {}) as { usage: { steps: Record<string, Record<string, number>> } }
        ).usage;
        expect(Object.keys(usage.steps)).toEqual(['detarget', 'train', 'perf']);
        const train = usage.steps.train as Record<string, number>;
        // USER_HZ is 100 on Linux.
        expect(train.cpu_s).toBeGreaterThan((ticks / 100) * 0.9);
        expect(train.cpu_s).toBeLessThan((ticks / 100) * 1.1);
        expect(train.peak_memory_bytes).toBeGreaterThan(100 * MIB);
        expect(train.peak_memory_bytes).toBeLessThan(110 * MIB);
        expect(train.written_bytes).toBeGreaterThan(3 * MIB * 0.9);
        expect(train.written_bytes).toBeLessThan(3 * MIB * 1.1);
        expect(train.wall_s).toBeGreaterThanOrEqual(2); // date +%s counts whole seconds
        // The parent cgroups the containers were measured in are gone with them.
        // Other tests' containers may be measured meanwhile: theirs come and go, a leaked
        // one of this task would stay.
        const ours = async () =>
          (await readdir('/sys/fs/cgroup/memory/compute-worker-run').catch(() => [])).filter(
            (name) => name.startsWith('worker-') && !before.has(name),
          );
        for (let i = 0; i < 60 && (await ours()).length > 0; i++) {
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
        expect(await ours()).toEqual([]);
      },
    );
  },
);
