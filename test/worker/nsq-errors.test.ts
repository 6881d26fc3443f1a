import { afterEach, describe, expect, it } from 'vitest';
import { type Nsqlookupd, startNsqlookupd } from '../support/nsq/index.js';
import { type Harness, TOPIC, until, useHarness } from '../support/worker-harness.js';
import { hasPodman, requireEngines, WARN } from '../support/worker-process.js';

// What an operator reads when NSQ is not there, and a worker that takes one kind of task.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!hasPodman && !requireEngines)('the worker and NSQ', () => {
  let h: Harness;
  useHarness({}, (started) => {
    h = started;
  });
  let lookupd: Nsqlookupd | undefined;
  afterEach(async () => {
    await lookupd?.stop();
    lookupd = undefined;
  });

  const subscribed = (from: number) =>
    h.nsqd.received
      .slice(from)
      .filter((c) => c.name === 'SUB')
      .map((c) => c.params[0]);

  it('says once that nsqlookupd stopped answering, and once that it answers again', async () => {
    const found = await startNsqlookupd({ nsqds: [h.nsqd] });
    lookupd = found;
    h.nsqd.getTopic(TOPIC.learn);
    h.nsqd.getTopic(TOPIC.predict);
    const worker = await h.fleet.start(
      await h.args([], undefined, ['--nsqlookupd-urls', found.address]),
      { env: h.env },
    );
    await worker.waitForLine((l) => l.msg === 'connected to nsqd', 120_000, 'a connection');
    await found.stop();
    const down = () => worker.find(`nsqlookupd at ${found.address} does not answer`);
    await until(() => down().length > 0, 30_000, 'the outage logged');
    // Asked every second by two topics: still one line.
    await sleep(4_000);
    expect(down()).toHaveLength(1);
    expect(down()[0]?.level).toBe(WARN);
    await found.start();
    const back = () => worker.find(`nsqlookupd at ${found.address} answers again`);
    await until(() => back().length > 0, 30_000, 'the end of the outage logged');
    await sleep(3_000);
    expect(back()).toHaveLength(1);
    expect(down()).toHaveLength(1);
  });

  for (const [flag, topic, other] of [
    ['--learn-parallelism', TOPIC.learn, TOPIC.predict],
    ['--predict-parallelism', TOPIC.predict, TOPIC.learn],
  ] as const) {
    it(`${flag} 0 subscribes to ${other} only`, async () => {
      const from = h.nsqd.received.length;
      const worker = await h.fleet.start(await h.args([flag, '0']), { env: h.env });
      const started = await worker.waitForLine(
        (l) => l.msg === 'worker started',
        120_000,
        'the worker started',
      );
      expect(started.topics).toEqual([other]);
      await until(() => subscribed(from).length > 0, 60_000, `a SUB to ${other}`);
      // Several polls later, still nothing on the other topic.
      await sleep(3_000);
      expect(subscribed(from)).toEqual([other]);
      expect(subscribed(from)).not.toContain(topic);
      worker.kill('SIGKILL');
      await worker.exited;
    });
  }
});
