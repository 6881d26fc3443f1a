import { describe, expect, it } from 'vitest';
import { closedPort } from '../support/http-stand-in.js';
import { get } from '../support/prometheus.js';
import { predictTask } from '../support/worker-fixtures.js';
import { type Harness, reportsOf, TOPIC, until, useHarness } from '../support/worker-harness.js';
import { hasPodman, requireEngines } from '../support/worker-process.js';

// A storage outage is storage's fault: the tasks it fails are requeued without spending
// their attempts, and the worker takes nothing new until storage answers again.

const OUTAGE_MS = 150_000;

describe.skipIf(!hasPodman && !requireEngines)('a storage outage', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });

  it(`of ${OUTAGE_MS / 1000} s with three tasks queued ends with all three done`, async () => {
    const address = `127.0.0.1:${await closedPort()}`;
    // The test worker's retry delays (1 s to 2 s) would spend 5 attempts in seconds.
    const worker = await h.fleet.start(
      await h.args(['--metrics-address', address, '--predict-parallelism', '2']),
      { env: h.env },
    );
    await until(() => worker.find('connected to nsqd').length >= 2, 60_000, 'both topics');
    // Every call is dropped, /health too: as a storage that is down.
    h.storage.fault(/./, { close: true });
    const tasks = [1, 2, 3].map(() => predictTask(h.storage, h.orchestrator, h.fixtures));
    for (const task of tasks) h.nsqd.publish(TOPIC.predict, task.body);
    await worker.waitForLine(
      (l) => l.msg.startsWith('storage is not answering'),
      120_000,
      'the outage noticed',
    );
    const during = await get(address, '/readyz');
    expect(during.status).toBe(503);
    expect(during.body).toContain('storage is not answering');
    await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
    expect(tasks.flatMap((t) => reportsOf(h.orchestrator, t.uuid))).toEqual([]);
    h.storage.clearFaults();
    await worker.waitForLine(
      (l) => l.msg.startsWith('storage answers again'),
      60_000,
      'storage back',
    );
    for (const task of tasks) {
      await worker.waitForLine(
        (l) => l.task === task.uuid && l.msg === 'task done',
        240_000,
        `task ${task.uuid} done`,
      );
      expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
    }
    let ready = await get(address, '/readyz');
    for (let i = 0; ready.status !== 200 && i < 100; i++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      ready = await get(address, '/readyz');
    }
    expect(ready).toEqual({ status: 200, body: 'ok\n' });
  }, 600_000);
});
