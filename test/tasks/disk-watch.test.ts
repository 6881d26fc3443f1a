import { describe, expect, it } from 'vitest';
import type { Engine, TreeUsage } from '../../src/engine/types.js';
import type { TaskEnv, TaskEvent, TaskRun } from '../../src/tasks/context.js';
import { watchDisk } from '../../src/tasks/disk-watch.js';

// The watcher's decisions, on an engine whose volumes are given: which volumes count,
// when the step is stopped, and what happens where volumes cannot be measured.

function fakeEnv(sizes: Record<string, number | Error>): { env: TaskEnv; measured: string[] } {
  const measured: string[] = [];
  const engine = {
    info: { name: 'podman' },
    volumeMountpoint: async (volume: string) => `/volumes/${volume}`,
    measureVolume: async (path: string): Promise<TreeUsage> => {
      const size = sizes[path.replace('/volumes/', '')];
      if (size instanceof Error) throw size;
      measured.push(path);
      return { bytes: size ?? 0, entries: 1, unreadable: 0, truncated: false };
    },
  } as unknown as Engine;
  return { env: { engine, diskLimitBytes: 1000 } as TaskEnv, measured };
}

function fakeRun(): { run: TaskRun; events: TaskEvent[] } {
  const events: TaskEvent[] = [];
  return {
    run: { signal: new AbortController().signal, onEvent: (e) => events.push(e) },
    events,
  };
}

describe('watchDisk', () => {
  it('sums only the writable volumes, and passes a step under the limit', async () => {
    const { env, measured } = fakeEnv({ model: 400, pred: 500, data: 10_000 });
    const { run } = fakeRun();
    const watch = watchDisk(env, run, 'train', [
      { volume: 'data', target: '/data/train', readOnly: true },
      { volume: 'pred', target: '/data/train/pred' },
      { volume: 'model', target: '/data/model' },
    ]);
    expect(await watch.stop()).toBeUndefined();
    expect(watch.signal.aborted).toBe(false);
    expect(new Set(measured)).toEqual(new Set(['/volumes/pred', '/volumes/model']));
  });

  it('stops the step once the writable volumes together pass the limit', async () => {
    const { env } = fakeEnv({ model: 600, pred: 500 });
    const { run } = fakeRun();
    const watch = watchDisk(
      env,
      run,
      'train',
      [
        { volume: 'pred', target: '/data/train/pred' },
        { volume: 'model', target: '/data/model' },
      ],
      "the submission's train step",
    );
    await new Promise((resolve) => watch.signal.addEventListener('abort', resolve));
    const error = await watch.stop();
    expect(error?.code).toBe('DISK_LIMIT');
    expect(error?.retryable).toBe(false);
    expect(error?.message).toBe(
      "the submission's train step filled its writable volumes with 1.1 KiB (1100 bytes), past the --disk-limit of 1000: it was stopped",
    );
    expect(run.signal.aborted).toBe(false);
  });

  it('warns once per engine where a volume cannot be read, and does not stop the step', async () => {
    const { env } = fakeEnv({ model: new Error('ENOENT: no such file or directory') });
    const first = fakeRun();
    const again = fakeRun();
    const mounts = [{ volume: 'model', target: '/data/model' }];
    expect(await watchDisk(env, first.run, 'train', mounts).stop()).toBeUndefined();
    expect(await watchDisk(env, again.run, 'predict', mounts).stop()).toBeUndefined();
    expect(first.events).toEqual([
      {
        type: 'warning',
        step: 'train',
        message: expect.stringMatching(
          /^--disk-limit is not enforced: the host folder of volume model cannot be read \(ENOENT/,
        ),
      },
    ]);
    expect(again.events).toEqual([]);
  });
});
