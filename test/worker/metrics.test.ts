import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { closedPort } from '../support/http-stand-in.js';
import { get, Scrape } from '../support/prometheus.js';
import { learnTask, predictTask, seedAlgo } from '../support/worker-fixtures.js';
import { type Harness, TOPIC, until, useHarness } from '../support/worker-harness.js';
import { BIN, hasPodman, requireEngines } from '../support/worker-process.js';

// What an operator's Prometheus and orchestrator probes see of a running worker.

/** Scrapes until `cond` holds of a scrape; the failure names what was awaited. */
async function scrapeUntil(
  address: string,
  cond: (m: Scrape) => boolean,
  what: string,
  timeoutMs = 30_000,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const scrape = new Scrape((await get(address, '/metrics')).body);
    if (cond(scrape)) return scrape;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${scrape.text}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Removes the images a test worker built (labelled with its id). */
async function removeImagesOf(workerId: string) {
  const filter = `label=compute-worker.built-by=${workerId}`;
  const ids = await execa('podman', ['images', '-q', '--filter', filter], { reject: false });
  const found = String(ids.stdout ?? '')
    .split('\n')
    .filter(Boolean);
  if (found.length) await execa('podman', ['rmi', '-f', ...new Set(found)], { reject: false });
}

/** GETs /readyz until it answers `status`; returns the last answer. */
async function readyzUntil(address: string, status: number) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const answer = await get(address, '/readyz');
    if (answer.status === status || Date.now() > deadline) return answer;
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(!hasPodman && !requireEngines)('run --metrics-address', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 5000 }, (started) => {
    h = started;
  });

  it('serves metrics during and after a task, and readiness that follows nsqd', async () => {
    const port = await closedPort();
    const address = `127.0.0.1:${port}`;
    const worker = await h.fleet.start(await h.args(['--metrics-address', address]), {
      env: h.env,
    });
    const announced = await worker.waitForLine(
      (l) => l.msg.startsWith('metrics on'),
      60_000,
      'the metrics address logged',
    );
    expect(announced.address).toBe(address);
    expect(await get(address, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    await until(() => worker.find('connected to nsqd').length >= 2, 30_000, 'both topics');
    expect(await readyzUntil(address, 200)).toEqual({ status: 200, body: 'ok\n' });

    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { sleep: 3 });
    h.nsqd.publish(TOPIC.predict, task.body);
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.step === 'predict' && l.msg === 'step started',
      180_000,
      'the predict step to start',
    );
    const during = new Scrape((await get(address, '/metrics')).body);
    expect(during.value('compute_worker_tasks_in_flight', { kind: 'predict' })).toBe(1);
    expect(during.value('compute_worker_tasks_started_total', { kind: 'predict' })).toBe(1);
    expect(during.value('compute_worker_nsqd_connections', { kind: 'predict' })).toBe(1);

    await worker.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      180_000,
      'the task done',
    );
    // The outcome is counted once the message is answered, just after "task done".
    const after = await scrapeUntil(
      address,
      (m) => m.value('compute_worker_tasks_in_flight', { kind: 'predict' }) === 0,
      'the task no longer in flight',
    );
    expect(after.family('compute_worker_tasks_finished_total')?.type).toBe('COUNTER');
    expect(
      after.value('compute_worker_tasks_finished_total', { kind: 'predict', outcome: 'done' }),
    ).toBe(1);
    expect(after.value('compute_worker_tasks_in_flight', { kind: 'predict' })).toBe(0);
    expect(after.family('compute_worker_step_duration_seconds')?.type).toBe('HISTOGRAM');
    expect(
      after.value('compute_worker_step_duration_seconds_count', {
        kind: 'predict',
        step: 'predict',
      }),
    ).toBe(1);
    // The submission slept 3 s in its predict step.
    expect(
      after.value('compute_worker_step_duration_seconds_sum', { kind: 'predict', step: 'predict' }),
    ).toBeGreaterThanOrEqual(3);
    expect(
      after.value('compute_worker_staged_in_bytes_total', { kind: 'predict' }),
    ).toBeGreaterThan(0);
    expect(
      after.value('compute_worker_staged_out_bytes_total', { kind: 'predict' }),
    ).toBeGreaterThan(0);
    // A predict task needs the submission's image only (built now, or found from an earlier test).
    const submission = (result: string) =>
      after.value('compute_worker_image_builds_total', { role: 'submission', result });
    expect(submission('hit') + submission('built')).toBe(1);
    expect(after.sample('compute_worker_image_builds_total', { role: 'workflow' })).toBeUndefined();
    expect(after.value('compute_worker_disk_free_bytes', { folder: 'temp' })).toBeGreaterThan(0);
    // No password, host secret or task data in the labels.
    for (const secret of Object.values(h.passwords)) expect(after.text).not.toContain(secret);
    expect(after.text).not.toContain(task.uuid);

    await h.nsqd.stop();
    await worker.waitForLine(
      (l) => l.msg.includes('connection to nsqd closed'),
      30_000,
      'the lost connection noticed',
    );
    await until(
      () => worker.find('connection to nsqd closed').length >= 2,
      30_000,
      'both connections closed',
    );
    expect(await get(address, '/readyz')).toEqual({
      status: 503,
      body: 'not connected to any nsqd\n',
    });
    expect((await get(address, '/healthz')).status).toBe(200);
    expect(
      new Scrape((await get(address, '/metrics')).body).value('compute_worker_nsqd_connections', {
        kind: 'predict',
      }),
    ).toBe(0);

    await h.nsqd.start();
    const ready = await readyzUntil(address, 200);
    expect(ready).toEqual({ status: 200, body: 'ok\n' });
    // Stopped here: its reconnections would otherwise reach nsqd during the next test.
    worker.kill('SIGTERM');
    await worker.exited;
  }, 300_000);

  it('stops when it cannot listen there, naming the address', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const address = `127.0.0.1:${(taken.address() as { port: number }).port}`;
    const from = h.nsqd.received.length;
    try {
      const result = await execa(
        'node',
        [BIN, 'run', ...(await h.args(['--metrics-address', address]))],
        { reject: false, env: { ...h.env, NODE_NO_WARNINGS: '1' }, timeout: 60_000 },
      );
      expect(result.exitCode).not.toBe(0);
      expect(result.stderr).toContain(`--metrics-address ${address}: cannot listen`);
      // The port is taken before any subscription: nsqd never delivered it anything.
      expect(h.nsqd.received.slice(from).filter((c) => c.name === 'SUB')).toEqual([]);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('refuses an address it cannot read, naming the flag', async () => {
    const result = await execa(
      'node',
      [BIN, 'run', '--nsqd-tcp-addresses', '127.0.0.1:1', '--metrics-address', 'host:port'],
      { reject: false, env: { NODE_NO_WARNINGS: '1' } },
    );
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain('--metrics-address "host:port"');
  });
});

describe.skipIf(!hasPodman && !requireEngines)('run --metrics-address, over tasks', () => {
  // A harness of its own: the worker of the tests above is still subscribed to its nsqd.
  let h: Harness;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });

  it('counts a done and a failed task end to end, what they cost, the image cache and the errors of storage', async () => {
    const address = `127.0.0.1:${await closedPort()}`;
    const worker = await h.fleet.start(await h.args(['--metrics-address', address]), {
      env: h.env,
    });
    await worker.waitForLine((l) => l.msg.startsWith('metrics on'), 120_000, 'metrics served');
    const start = new Scrape((await get(address, '/metrics')).body);
    const engine = await execa('podman', ['version', '--format', '{{.Server.Version}}']);
    const info = start.family('compute_worker_build_info')?.metrics[0]?.labels;
    expect(info).toEqual({
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      engine: 'podman',
      engine_version: engine.stdout.trim(),
    });
    expect(start.value('compute_worker_draining')).toBe(0);
    expect(start.value('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(start.family('nodejs_eventloop_lag_seconds')).toBeDefined();
    const failedBefore = {
      kind: 'learn',
      outcome: 'failed',
    };
    // Known label values are there from the start, at zero.
    expect(start.sample('compute_worker_task_duration_seconds_count', failedBefore)?.value).toBe(
      '0',
    );
    expect(
      start.sample('compute_worker_service_errors_total', { service: 'storage', code: 'timeout' })
        ?.value,
    ).toBe('0');

    // The done task's submission is one this worker builds (so its image cache holds it).
    const algo = await seedAlgo(h.storage, [
      `RUN true # cwmetrics${randomBytes(6).toString('hex')}`,
    ]);
    const done = learnTask(
      h.storage,
      h.orchestrator,
      { ...h.fixtures, algoUuid: algo },
      { sleep: 2 },
    );
    const failed = predictTask(h.storage, h.orchestrator, h.fixtures, { exit: 3 });
    // Storage fails one download of the failed task's data with a 503; it is retried.
    h.storage.fault(`/data/${failed.data}/blob`, { status: 503, times: 1 });
    h.nsqd.publish(TOPIC.learn, done.body);
    h.nsqd.publish(TOPIC.predict, failed.body);
    const count = (m: Scrape, kind: string, outcome: string) =>
      m.value('compute_worker_task_duration_seconds_count', { kind, outcome });
    let after: Scrape;
    try {
      after = await scrapeUntil(
        address,
        (m) => count(m, 'learn', 'done') === 1 && count(m, 'predict', 'failed') === 1,
        'both tasks answered',
        300_000,
      );
    } finally {
      await removeImagesOf(await worker.workerId());
    }
    expect(after.family('compute_worker_task_duration_seconds')?.type).toBe('HISTOGRAM');
    // The done task slept 2 s in its train step.
    expect(
      after.value('compute_worker_task_duration_seconds_sum', { kind: 'learn', outcome: 'done' }),
    ).toBeGreaterThan(2);
    expect(
      after.sample('compute_worker_task_duration_seconds_count', {
        kind: 'learn',
        outcome: 'failed',
      })?.value,
    ).toBe('0');
    // Each ran containers: one observation each of what it cost.
    for (const kind of ['learn', 'predict']) {
      expect(after.value('compute_worker_task_cpu_seconds_count', { kind })).toBe(1);
      expect(after.value('compute_worker_task_peak_memory_bytes_count', { kind })).toBe(1);
      expect(after.value('compute_worker_task_peak_memory_bytes_sum', { kind })).toBeGreaterThan(0);
    }
    // No GPUs here: no GPU seconds, rather than zeros.
    expect(after.sample('compute_worker_task_gpu_seconds_count')).toBeUndefined();
    expect(
      after.value('compute_worker_image_builds_total', { role: 'submission', result: 'built' }),
    ).toBe(1);
    expect(after.value('compute_worker_image_cache_images')).toBeGreaterThanOrEqual(1);
    expect(after.value('compute_worker_image_cache_bytes')).toBeGreaterThan(0);
    expect(
      after.value('compute_worker_service_errors_total', { service: 'storage', code: '503' }),
    ).toBe(1);
    expect(
      after.sample('compute_worker_service_errors_total', {
        service: 'orchestrator',
        code: 'connection',
      })?.value,
    ).toBe('0');
    expect(after.text).not.toContain(done.uuid);
    expect(after.text).not.toContain(failed.uuid);
  }, 400_000);
});
