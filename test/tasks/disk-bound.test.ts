import { readdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sizedDiskUnavailable } from '../../src/engine/sized-disk.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  doneReports,
  exampleContext,
  exampleData,
  leftovers,
  newIds,
  podmanMissing,
  prebuild,
  runTask,
  scriptRunnerContext,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

// The hard disk bound (as root, rootful podman): a submission that writes 3 GiB as fast as
// the disk takes it, under --disk-limit 1g, adds no more than the limit plus 5 % to the
// host's disk (counted in the blocks the task's files and volumes hold), fails with DISK_LIMIT, and leaves no mount, loop device, file or volume.
// The poll alone let all 3 GiB through before its first walk.

const GIB = 1024 ** 3;
const LIMIT = GIB;
const FLOOD = 'dd if=/dev/zero of=/data/model/flood bs=1M count=3072\n';

const root = process.getuid?.() === 0;

/** Loop devices (/dev/loopN) whose backing file is under `dir`. */
async function loopsUnder(dir: string): Promise<string[]> {
  const names = (await readdir('/sys/block')).filter((n) => n.startsWith('loop'));
  const found = await Promise.all(
    names.map(async (name) => {
      const file = await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8').catch(() => '');
      return file.startsWith(`${dir}/`) ? `/dev/${name}` : undefined;
    }),
  );
  return found.filter((d): d is string => d !== undefined);
}

describe.skipIf((podmanMissing !== undefined || !root) && !requireEngines)(
  'hard disk bound of a task',
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    const ids = newIds('W', 'R', 'test', 'train');

    beforeAll(async () => {
      world = await startWorld();
      const [problem, runner] = await Promise.all([
        exampleContext('problem'),
        scriptRunnerContext(),
      ]);
      world.storage.seed('problem', ids.W, { blob: problem });
      world.storage.seed('algo', ids.R, { blob: runner });
      world.storage.seed('data', ids.test, { blob: await exampleData('test.csv') });
      world.storage.seed('data', ids.train, { blob: FLOOD });
      const env = await world.env();
      await prebuild(env, [
        ['workflow', problem],
        ['submission', runner],
      ]);
    });

    afterAll(() => world?.close());

    it('holds a 3 GiB write at full speed under --disk-limit 1g to the limit', async () => {
      const env = await world.env({ diskLimitBytes: LIMIT, learnTimeoutMs: 120_000 });
      expect(await sizedDiskUnavailable(env.engine.info)).toBeUndefined();
      const task = {
        ...newIds('uuid', 'model_end'),
        workflow: ids.W,
        algo: ids.R,
        train_data: [ids.train],
        test_data: [ids.test],
        model_start: null,
        rank: 0,
      };
      // What the task holds on the host's disk: its temp folder (the sized filesystems'
      // backing files among it) and its volumes' folders, each counted in blocks on its own
      // filesystem (-x: a sized filesystem mounted over a volume is its backing file).
      // Free space of the whole disk would count what the tests beside this one write.
      let volumeDirs: string[] = [];
      const refreshVolumes = async () => {
        const ls = await execa(
          'podman',
          ['volume', 'ls', '-q', '--filter', `label=compute-worker.task=${task.uuid}`],
          { reject: false },
        );
        const names = ls.stdout.split('\n').filter(Boolean);
        if (names.length === 0) return;
        const inspect = await execa(
          'podman',
          ['volume', 'inspect', '--format', '{{.Mountpoint}}', ...names],
          { reject: false },
        );
        // A volume's own folder, above its _data: a sized filesystem bound onto _data is
        // counted once, as its backing file in the temp folder.
        if (inspect.exitCode === 0) {
          volumeDirs = inspect.stdout
            .split('\n')
            .filter(Boolean)
            .map((dir) => dirname(dir));
        }
      };
      const held = async () => {
        const du = await execa('du', ['-s', '-x', '-B1', env.tmpDir, ...volumeDirs], {
          reject: false,
        });
        return du.stdout
          .split('\n')
          .reduce((sum, line) => sum + (Number(line.split('\t')[0]) || 0), 0);
      };
      const before = await held();
      let most = before;
      let sampling = true;
      const ours = new Set<string>(); // loop devices seen backing files of the task
      const sampler = (async () => {
        for (let round = 0; sampling; round++) {
          if (round % 10 === 0) await refreshVolumes();
          most = Math.max(most, await held());
          for (const device of await loopsUnder(env.tmpDir)) ours.add(device);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      })();
      const { report, logs } = await runTask(world, env, task);
      sampling = false;
      await sampler;

      const added = most - before;
      console.log(`disk added at most ${(added / 2 ** 20).toFixed(0)} MiB under a 1 GiB limit`);
      expect(added).toBeLessThanOrEqual(LIMIT * 1.05);
      expect(report.status).toBe('failed');
      expect(report.error?.code, report.error?.describe()).toBe('DISK_LIMIT');
      expect(report.failedStep).toBe('train');
      expect(report.error?.message).toMatch(
        /^the submission's train step filled its writable volumes with [0-9.]+ (MiB|GiB) \(\d+ bytes\), all the --disk-limit of 1g allows: writing more failed with "no space left on device"$/,
      );
      expect(logs.join('\n')).toMatch(/No space left on device/);
      expect(doneReports(world, report.uuid).map((r) => r.body)).toEqual([
        expect.objectContaining({
          status: 'failed',
          error: expect.objectContaining({ code: 'DISK_LIMIT', fault: 'task' }),
        }),
      ]);

      // Nothing left: no volume, container or file, no mount, no loop device of this task.
      expect(await leftovers(report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
      expect(ours.size).toBeGreaterThan(0);
      const mounts = await readFile('/proc/mounts', 'utf8');
      expect(mounts).not.toContain(env.tmpDir);
      expect(await loopsUnder(env.tmpDir)).toEqual([]);
      for (const device of ours) {
        if (!new RegExp(`^${device} `, 'm').test(mounts)) continue;
        // Mounted again: a sibling test was given the same loop device since. Its file
        // is not this task's.
        const name = device.replace('/dev/', '');
        const file = await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8').catch(() => '');
        expect(file).not.toContain(env.tmpDir);
      }
      const loops = await execa('losetup', ['-a']);
      expect(loops.stdout).not.toContain(env.tmpDir);
    });
  },
);
