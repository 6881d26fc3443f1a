import { beforeAll, describe, expect, it } from 'vitest';
import { predictTask, type SeededTask } from '../support/worker-fixtures.js';
import {
  claimsOf,
  type Harness,
  reportsOf,
  TOPIC,
  until,
  useHarness,
} from '../support/worker-harness.js';
import { hasPodman, requireEngines, type WorkerProcess } from '../support/worker-process.js';

// Three worker processes on one channel share thirty predict tasks: nsqd hands each
// message to one of them, and each task is reported done exactly once.

describe.skipIf(!hasPodman && !requireEngines)('three workers share the work', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });
  const tasks: SeededTask[] = [];
  const workers: WorkerProcess[] = [];

  beforeAll(async () => {
    for (let i = 0; i < 30; i++) tasks.push(predictTask(h.storage, h.orchestrator, h.fixtures));
    h.nsqd.publish(
      TOPIC.predict,
      tasks.map((t) => t.body),
    );
    const parallel = ['--predict-parallelism', '2'];
    // One worker gets its passwords as flags, the way the original worker was run.
    const asFlags = [
      '--storage-password',
      h.passwords.storage,
      '--orchestrator-password',
      h.passwords.orchestrator,
    ];
    workers.push(
      await h.fleet.start(await h.args(parallel), { env: h.env }),
      await h.fleet.start(await h.args(parallel), { env: h.env }),
      await h.fleet.start(await h.args([...parallel, ...asFlags])),
    );
    await until(
      () => tasks.every((t) => h.orchestrator.task(t.uuid)?.status === 'done'),
      300_000,
      'all thirty tasks done',
    );
    // A message is finished once its task's containers and volumes are removed, after the
    // report: on a loaded machine that cleanup takes seconds.
    await h.nsqd.waitFor(
      (s) => s.topics.some((t) => t.channels[0]?.finishCount === 30),
      60_000,
      'thirty messages finished',
    );
  }, 330_000);

  it('each task is claimed once and reported done exactly once', () => {
    for (const t of tasks) {
      expect(claimsOf(h.orchestrator, t.uuid).map((r) => r.status)).toEqual([200]);
      expect(reportsOf(h.orchestrator, t.uuid).map((r) => [r.body.status, r.status])).toEqual([
        ['done', 200],
      ]);
    }
  });

  it('every worker took part, and together they did each task once', () => {
    const doneBy = workers.map(
      (w) => new Set(w.lines.filter((l) => l.msg === 'task done').map((l) => l.task)),
    );
    for (const done of doneBy) expect(done.size).toBeGreaterThan(0);
    expect(doneBy.reduce((n, done) => n + done.size, 0)).toBe(30);
  });

  it('leaves no container or volume behind', async () => {
    for (const w of workers) {
      expect(await h.fleet.leftovers(await w.workerId())).toEqual({ containers: [], volumes: [] });
    }
  });
});
