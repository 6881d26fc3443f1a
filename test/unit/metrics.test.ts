import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { register } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/types.js';
import { WorkerError } from '../../src/errors.js';
import { Health } from '../../src/worker/health.js';
import { WorkerMetrics } from '../../src/worker/metrics.js';
import { parseListenAddress, startMetricsServer } from '../../src/worker/metrics-server.js';
import { get, Scrape } from '../support/prometheus.js';

// What an operator's Prometheus sees of the worker, and what the health endpoints answer.

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cw-metrics-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const env = () => ({
  tmpDir: dir,
  engine: { info: { graphRoot: join(dir, 'missing') } } as unknown as Engine,
});

describe('WorkerMetrics', () => {
  it('counts a task from start to end, its steps, images and bytes', async () => {
    const m = new WorkerMetrics(env());
    m.nsqdConnected('predict', '127.0.0.1:4150');
    m.taskStarted('predict');
    let scrape = new Scrape(await m.scrape());
    expect(scrape.value('compute_worker_tasks_in_flight', { kind: 'predict' })).toBe(1);
    expect(scrape.value('compute_worker_tasks_in_flight', { kind: 'learn' })).toBe(0);
    expect(scrape.value('compute_worker_nsqd_connections', { kind: 'predict' })).toBe(1);

    m.taskEvent('predict', { type: 'step-start', step: 'build-submission' });
    m.taskEvent('predict', {
      type: 'step-end',
      step: 'build-submission',
      ms: 2500,
      note: 'localhost/compute-worker/submission:abc (cached)',
    });
    m.taskEvent('predict', {
      type: 'step-end',
      step: 'build-workflow',
      ms: 12_000,
      note: 'localhost/compute-worker/workflow:def',
    });
    m.taskEvent('predict', { type: 'staged', name: 'data/x', bytes: 300 });
    m.taskEvent('predict', { type: 'staged', name: 'model/y', bytes: 45 });
    m.taskEvent('predict', {
      type: 'step-end',
      step: 'upload',
      ms: 100,
      note: 'prediction 1b4e28ba-2fa1-11d2-883f-0016d3cca427, 1234 bytes',
    });
    m.taskReport({
      kind: 'learn',
      uuid: 'u',
      steps: [],
      status: 'failed',
      failedStep: 'build-submission',
    });
    m.taskFinished('predict', 'done');
    m.taskFinished('predict', 'requeued');
    m.taskFinished('predict', 'cancelled');
    m.requeued('learn', 'no-free-slot');
    m.nsqdClosed('predict', '127.0.0.1:4150');

    scrape = new Scrape(await m.scrape());
    expect(scrape.value('compute_worker_tasks_started_total', { kind: 'predict' })).toBe(1);
    expect(
      scrape.value('compute_worker_tasks_finished_total', { kind: 'predict', outcome: 'done' }),
    ).toBe(1);
    const upload = { kind: 'predict', step: 'upload' };
    expect(scrape.value('compute_worker_step_duration_seconds_count', upload)).toBe(1);
    expect(scrape.value('compute_worker_step_duration_seconds_sum', upload)).toBe(0.1);
    expect(scrape.family('compute_worker_step_duration_seconds')?.type).toBe('HISTOGRAM');
    expect(
      scrape.value('compute_worker_image_builds_total', { role: 'submission', result: 'hit' }),
    ).toBe(1);
    expect(
      scrape.value('compute_worker_image_builds_total', { role: 'workflow', result: 'built' }),
    ).toBe(1);
    expect(
      scrape.value('compute_worker_image_builds_total', { role: 'submission', result: 'failed' }),
    ).toBe(1);
    // Only a real build is timed as one: the cached submission is not.
    expect(
      scrape.value('compute_worker_image_build_duration_seconds_count', { role: 'workflow' }),
    ).toBe(1);
    expect(
      scrape.value('compute_worker_image_build_duration_seconds_sum', { role: 'workflow' }),
    ).toBe(12);
    expect(
      scrape.sample('compute_worker_image_build_duration_seconds_count', { role: 'submission' }),
    ).toBeUndefined();
    expect(scrape.value('compute_worker_staged_in_bytes_total', { kind: 'predict' })).toBe(345);
    expect(scrape.value('compute_worker_staged_out_bytes_total', { kind: 'predict' })).toBe(1234);
    expect(
      scrape.value('compute_worker_messages_requeued_total', {
        kind: 'predict',
        reason: 'worker-fault',
      }),
    ).toBe(1);
    expect(
      scrape.value('compute_worker_messages_requeued_total', {
        kind: 'predict',
        reason: 'shutdown',
      }),
    ).toBe(1);
    expect(
      scrape.value('compute_worker_messages_requeued_total', {
        kind: 'learn',
        reason: 'no-free-slot',
      }),
    ).toBe(1);
    expect(scrape.value('compute_worker_nsqd_connections', { kind: 'predict' })).toBe(0);
    expect(m.nsqdConnectionCount).toBe(0);
  });

  it('names everything compute_worker_*, in Prometheus style, in a registry of its own', async () => {
    const scrape = new Scrape(await new WorkerMetrics(env()).scrape());
    expect(scrape.families.length).toBeGreaterThan(8);
    for (const family of scrape.families) {
      expect(family.name).toMatch(/^compute_worker_[a-z_]+$/);
      if (family.type === 'COUNTER') expect(family.name).toMatch(/_total$/);
      if (family.type === 'HISTOGRAM') expect(family.name).toMatch(/_seconds$/);
    }
    expect(await register.metrics()).not.toContain('compute_worker_');
  });

  it('reads the free disk on scrape, leaving out a folder it cannot read, and has no GPU gauges without GPUs', async () => {
    const scrape = new Scrape(await new WorkerMetrics(env()).scrape());
    expect(scrape.value('compute_worker_disk_free_bytes', { folder: 'temp' })).toBeGreaterThan(0);
    expect(
      scrape.sample('compute_worker_disk_free_bytes', { folder: 'engine-storage' }),
    ).toBeUndefined();
    expect(scrape.family('compute_worker_gpus_in_use')).toBeUndefined();
  });

  it('reads the GPUs in use on scrape', async () => {
    const pool = { gpus: [{}, {}], inUse: 0 };
    const m = new WorkerMetrics({ ...env(), gpus: { pool } as never });
    pool.inUse = 1;
    const scrape = new Scrape(await m.scrape());
    expect(scrape.value('compute_worker_gpus_in_use')).toBe(1);
    expect(scrape.value('compute_worker_gpus')).toBe(2);
  });
});

describe('Health', () => {
  it('is ready with an nsqd connection and an engine that answered within the last minute', async () => {
    let now = 1_000_000;
    let connections = 0;
    let answers = true;
    const engine = {
      ping: async () => {
        if (!answers) throw new Error('podman version: timed out\nmore');
      },
    };
    const health = new Health(
      engine,
      () => connections,
      () => now,
    );
    try {
      await health.pingEngine();
      expect(health.live().ok).toBe(true);
      expect(health.ready()).toEqual({ ok: false, reason: 'not connected to any nsqd' });
      connections = 1;
      expect(health.ready()).toEqual({ ok: true, reason: 'ok' });
      answers = false;
      now += 61_000;
      await health.pingEngine();
      expect(health.ready()).toEqual({
        ok: false,
        reason: 'the engine last answered 61s ago; engine: podman version: timed out',
      });
      // The loop's timer has not run for a minute of this clock: not live.
      expect(health.live().ok).toBe(false);
      answers = true;
      await health.pingEngine();
      expect(health.ready().ok).toBe(true);
    } finally {
      health.close();
    }
  });
});

describe('--metrics-address', () => {
  it('reads HOST:PORT, [v6]:PORT and a bare port (127.0.0.1)', () => {
    expect(parseListenAddress('9100')).toEqual({ host: '127.0.0.1', port: 9100 });
    expect(parseListenAddress('0.0.0.0:9100')).toEqual({ host: '0.0.0.0', port: 9100 });
    expect(parseListenAddress('[::1]:9100')).toEqual({ host: '::1', port: 9100 });
    expect(parseListenAddress('metrics.local:80')).toEqual({ host: 'metrics.local', port: 80 });
  });

  it.each(['', 'abc', ':9100', '1.2.3.4:', '1.2.3.4:99999', 'http://x:1', '::1:9100'])(
    'refuses %j with a WorkerError naming the flag',
    (text) => {
      expect(() => parseListenAddress(text)).toThrow(WorkerError);
      expect(() => parseListenAddress(text)).toThrow(/--metrics-address/);
    },
  );

  it('serves /metrics, /healthz and /readyz, and nothing else', async () => {
    const m = new WorkerMetrics();
    const server = await startMetricsServer(
      { host: '127.0.0.1', port: 0 },
      {
        scrape: () => m.scrape(),
        contentType: m.registry.contentType,
        live: () => ({ ok: true, reason: 'ok' }),
        ready: () => ({ ok: false, reason: 'not connected to any nsqd' }),
      },
    );
    try {
      expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
      const metrics = await fetch(`http://${server.address}/metrics`);
      expect(metrics.status).toBe(200);
      expect(metrics.headers.get('content-type')).toContain('text/plain');
      expect(
        new Scrape(await metrics.text()).family('compute_worker_tasks_started_total'),
      ).toBeDefined();
      expect(await get(server.address, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
      expect(await get(server.address, '/readyz')).toEqual({
        status: 503,
        body: 'not connected to any nsqd\n',
      });
      expect((await get(server.address, '/')).status).toBe(404);
      expect((await get(server.address, '/metrics/../etc')).status).toBe(404);
      const post = await fetch(`http://${server.address}/metrics`, { method: 'POST' });
      expect(post.status).toBe(405);
    } finally {
      await server.close();
    }
  });

  it('names the address it cannot listen on', async () => {
    const sources = {
      scrape: async () => '',
      contentType: 'text/plain',
      live: () => ({ ok: true, reason: 'ok' }),
      ready: () => ({ ok: true, reason: 'ok' }),
    };
    const first = await startMetricsServer({ host: '127.0.0.1', port: 0 }, sources);
    try {
      const port = Number(first.address.split(':')[1]);
      await expect(startMetricsServer({ host: '127.0.0.1', port }, sources)).rejects.toThrow(
        `--metrics-address 127.0.0.1:${port}: cannot listen`,
      );
    } finally {
      await first.close();
    }
  });
});
