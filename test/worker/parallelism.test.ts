import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { learnTask, type SeededTask } from '../support/worker-fixtures.js';
import { type Harness, reportsOf, sleep, TOPIC, useHarness } from '../support/worker-harness.js';
import {
  hasPodman,
  ociRuntime,
  requireEngines,
  type WorkerProcess,
} from '../support/worker-process.js';

// --learn-parallelism 2 and five slow learn tasks: seen from the orchestrator (claim to
// report of each task) and from the engine (tasks with a container at each sample),
// never more than two at once, and all five done.

/** Largest number of [start, end] intervals that overlap at one moment. */
function maxOverlap(intervals: [number, number][]): number {
  const events = intervals.flatMap(([s, e]) => [
    [s, 1],
    [e, -1],
  ]);
  // An end and a start at the same millisecond do not overlap.
  events.sort((a, b) => (a[0] as number) - (b[0] as number) || (a[1] as number) - (b[1] as number));
  let now = 0;
  let max = 0;
  for (const [, delta] of events) {
    now += delta as number;
    max = Math.max(max, now);
  }
  return max;
}

describe.skipIf(!hasPodman && !requireEngines)('parallelism', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });
  let worker: WorkerProcess;
  const tasks: SeededTask[] = [];
  /** Distinct tasks with a container of this worker, at each sample. */
  const samples: number[] = [];

  beforeAll(async () => {
    for (let i = 0; i < 5; i++) {
      tasks.push(learnTask(h.storage, h.orchestrator, h.fixtures, { sleep: 3 }));
    }
    for (const t of tasks) h.nsqd.publish(TOPIC.learn, t.body);
    worker = await h.fleet.start(await h.args(['--learn-parallelism', '2']), { env: h.env });
    await worker.waitForLine((l) => l.msg === 'worker started', 60_000, 'the worker to start');
    const id = await worker.workerId();
    const allDone = () => tasks.every((t) => h.orchestrator.task(t.uuid)?.status === 'done');
    const runtime = ociRuntime ? ['--runtime', ociRuntime] : [];
    while (!allDone()) {
      const ps = await execa(
        'podman',
        [
          ...runtime,
          'ps',
          '--filter',
          `label=compute-worker.worker=${id}`,
          '--format',
          '{{index .Labels "compute-worker.task"}}',
        ],
        { reject: false },
      );
      samples.push(new Set(String(ps.stdout).split('\n').filter(Boolean)).size);
      await sleep(200);
      if (worker.child.exitCode !== null) throw new Error(`worker exited:\n${worker.tail()}`);
    }
  }, 300_000);

  it('all five tasks are done, each reported once', () => {
    for (const t of tasks) {
      expect(reportsOf(h.orchestrator, t.uuid).map((r) => r.body.status)).toEqual(['done']);
    }
  });

  it('never more than two tasks between claim and report', () => {
    const intervals = tasks.map((t): [number, number] => {
      const claim = h.orchestrator.requests.find((r) => r.path === `/worker/learnuplet/${t.uuid}`);
      const done = h.orchestrator.requests.find((r) => r.path === `/learndone/${t.uuid}`);
      expect(claim && done).toBeTruthy();
      return [claim?.at ?? 0, done?.at ?? 0];
    });
    expect(maxOverlap(intervals)).toBe(2);
  });

  it('never more than two tasks with containers at once', () => {
    expect(samples.length).toBeGreaterThan(3);
    expect(Math.max(...samples)).toBeLessThanOrEqual(2);
  });
});
