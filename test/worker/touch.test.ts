import { describe, expect, it } from 'vitest';
import { predictTask } from '../support/worker-fixtures.js';
import {
  commandsFor,
  deliveriesOf,
  type Harness,
  reportsOf,
  TOPIC,
  until,
  useHarness,
} from '../support/worker-harness.js';
import { hasPodman, requireEngines, WARN } from '../support/worker-process.js';

// A task much longer than nsqd's message timeout stays in flight because the worker
// touches it; and the worker warns at start-up when nsqd's cap on touching is below a
// task timeout.

describe.skipIf(!hasPodman && !requireEngines)('long tasks', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 2000 }, (started) => {
    h = started;
  });

  it('a task longer than the message timeout is touched, not redelivered, done once', async () => {
    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 6 });
    const [id] = h.nsqd.publish(TOPIC.predict, task.body) as [string];
    const worker = await h.fleet.start(await h.args(), { env: h.env });
    await until(() => h.orchestrator.task(task.uuid)?.status === 'done', 180_000, 'task done');
    await h.nsqd
      .waitFor(
        (s) => s.topics.some((t) => t.channels[0]?.finishCount === 1),
        // Finished once the task's containers and volumes are removed: on a loaded machine,
        // each engine call can take seconds.
        150_000,
        'the message finished',
      )
      .catch((error: Error) => {
        throw new Error(`${error.message}\nthe worker's log:\n${worker.tail()}`);
      });

    const commands = commandsFor(h.nsqd, id).map((c) => c.name);
    // At least three touches: the sleep alone spans three message timeouts.
    expect(commands.filter((c) => c === 'TOUCH').length).toBeGreaterThanOrEqual(3);
    expect(commands.filter((c) => c !== 'TOUCH')).toEqual(['FIN']);
    expect(deliveriesOf(h.nsqd.stats(), TOPIC.predict, id).map((d) => d.attempts)).toEqual([1]);
    expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
  }, 360_000);
});

describe.skipIf(!hasPodman && !requireEngines)('start-up check of nsqd', () => {
  let h: Harness;
  useHarness(
    { maxMsgTimeoutMs: 60_000 },
    (started) => {
      h = started;
    },
    { checkLogs: false },
  );

  it("names nsqd's --max-msg-timeout when a task timeout is longer", async () => {
    const worker = await h.fleet.start(
      await h.args(['--learn-timeout', '2m', '--predict-timeout', '30s']),
      { env: h.env },
    );
    for (const topic of [TOPIC.learn, TOPIC.predict]) {
      await worker.waitForLine(
        (l) => l.msg === 'connected to nsqd' && l.topic === topic,
        60_000,
        `the ${topic} reader connected`,
      );
    }
    // The warning is logged just after the connection: it may still be on its way.
    await worker.waitForLine(
      (l) => l.level === WARN && l.msg.includes('nsqd') && l.topic === TOPIC.learn,
      30_000,
      "the learn reader's warning",
    );
    const warnings = worker.lines.filter((l) => l.level === WARN && l.msg.includes('nsqd'));
    const learn = warnings.filter((l) => l.topic === TOPIC.learn);
    expect(learn).toHaveLength(1);
    expect(learn[0]?.msg).toContain('--max-msg-timeout');
    expect(learn[0]?.msg).toContain('2m0s');
    // 30s fits in nsqd's 1m cap: nothing to say about predict tasks.
    expect(warnings.filter((l) => l.topic === TOPIC.predict)).toEqual([]);
  }, 240_000);
});
