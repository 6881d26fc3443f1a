import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { register } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerVersion } from '../../src/config/worker-version.js';
import type { Engine } from '../../src/engine/types.js';
import { WorkerError } from '../../src/errors.js';
import { Health } from '../../src/worker/health.js';
import { WorkerMetrics } from '../../src/worker/metrics.js';
import { parseListenAddress, startMetricsServer } from '../../src/worker/metrics-server.js';
import { MESSAGE_OUTCOMES } from '../../src/worker/task-runner.js';
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
    m.taskEvent('predict', { type: 'data-set', set: 'test', source: 'cache' });
    m.taskEvent('learn', { type: 'data-set', set: 'train', source: 'staged-into-cache' });
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
    const sets = (kind: string, source: string) =>
      scrape.value('compute_worker_data_sets_total', { kind, source });
    expect([sets('predict', 'cache'), sets('learn', 'staged-into-cache')]).toEqual([1, 1]);
    expect([sets('predict', 'staged'), sets('learn', 'cache')]).toEqual([0, 0]);
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

  it("names its own compute_worker_*, beside the process's usual ones, in Prometheus style, in a registry of its own", async () => {
    const metrics = new WorkerMetrics(env());
    // prom-client counts the CPU used since the registry was made: use some first.
    for (const start = process.cpuUsage().user; process.cpuUsage().user - start < 20_000; );
    const scrape = new Scrape(await metrics.scrape());
    expect(scrape.families.length).toBeGreaterThan(8);
    for (const family of scrape.families) {
      expect(family.name).toMatch(/^(compute_worker|process|nodejs)_[a-z0-9_]+$/);
      if (family.type === 'COUNTER') expect(family.name).toMatch(/_total$/);
      if (family.type === 'HISTOGRAM') expect(family.name).toMatch(/_(seconds|bytes)$/);
    }
    // prom-client's default metrics, as dashboards for Node.js services expect them.
    expect(scrape.value('process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(scrape.value('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(scrape.family('nodejs_eventloop_lag_seconds')).toBeDefined();
    expect(scrape.family('nodejs_heap_size_used_bytes')).toBeDefined();
    expect(await register.metrics()).not.toContain('compute_worker_');
  });

  it('exports at zero every kind and outcome, every service and failure without a status, and not draining', async () => {
    const scrape = new Scrape(await new WorkerMetrics(env()).scrape());
    for (const kind of ['learn', 'predict']) {
      for (const outcome of [...MESSAGE_OUTCOMES, 'error']) {
        expect(scrape.sample('compute_worker_tasks_finished_total', { kind, outcome })?.value).toBe(
          '0',
        );
        expect(
          scrape.sample('compute_worker_task_duration_seconds_count', { kind, outcome })?.value,
        ).toBe('0');
      }
      expect(scrape.sample('compute_worker_tasks_started_total', { kind })?.value).toBe('0');
      expect(scrape.sample('compute_worker_task_cpu_seconds_count', { kind })?.value).toBe('0');
      expect(scrape.sample('compute_worker_task_peak_memory_bytes_count', { kind })?.value).toBe(
        '0',
      );
    }
    for (const service of ['storage', 'orchestrator'])
      for (const code of ['connection', 'timeout', 'tls', 'bad_answer'])
        expect(scrape.sample('compute_worker_service_errors_total', { service, code })?.value).toBe(
          '0',
        );
    expect(scrape.sample('compute_worker_draining')?.value).toBe('0');
  });

  it('times tasks end to end, sums their usage, counts service errors and draining', async () => {
    const m = new WorkerMetrics(env());
    m.taskFinished('learn', 'done', 42);
    m.taskFinished('learn', 'failed', 3);
    const usage = {
      detarget: { wall_s: 1, cpu_s: 0.5, peak_memory_bytes: 10_000_000 },
      train: {
        wall_s: 20,
        cpu_s: 15,
        peak_memory_bytes: 500_000_000,
        gpus: [{ uuid: 'GPU-a', busy_s: 12, peak_memory_bytes: 1 }],
      },
      perf: { wall_s: 1 },
    };
    m.taskReport({ kind: 'learn', uuid: 'u', steps: [], status: 'done', usage });
    // A host that measures nothing observes nothing, not zeros.
    m.taskReport({
      kind: 'predict',
      uuid: 'v',
      steps: [],
      status: 'done',
      usage: { predict: { wall_s: 2 } },
    });
    m.serviceError('storage', '503');
    m.serviceError('storage', '503');
    m.serviceError('orchestrator', 'connection');
    m.drainingStarted();
    const scrape = new Scrape(await m.scrape());
    const done = { kind: 'learn', outcome: 'done' };
    expect(scrape.value('compute_worker_task_duration_seconds_count', done)).toBe(1);
    expect(scrape.value('compute_worker_task_duration_seconds_sum', done)).toBe(42);
    expect(
      scrape.value('compute_worker_task_duration_seconds_sum', {
        kind: 'learn',
        outcome: 'failed',
      }),
    ).toBe(3);
    expect(scrape.value('compute_worker_task_cpu_seconds_sum', { kind: 'learn' })).toBe(15.5);
    expect(scrape.value('compute_worker_task_peak_memory_bytes_sum', { kind: 'learn' })).toBe(
      500_000_000,
    );
    expect(scrape.value('compute_worker_task_gpu_seconds_sum', { kind: 'learn' })).toBe(12);
    expect(scrape.value('compute_worker_task_cpu_seconds_count', { kind: 'predict' })).toBe(0);
    expect(
      scrape.sample('compute_worker_task_gpu_seconds_count', { kind: 'predict' }),
    ).toBeUndefined();
    expect(
      scrape.value('compute_worker_service_errors_total', { service: 'storage', code: '503' }),
    ).toBe(2);
    expect(
      scrape.value('compute_worker_service_errors_total', {
        service: 'orchestrator',
        code: 'connection',
      }),
    ).toBe(1);
    expect(scrape.value('compute_worker_draining')).toBe(1);
  });

  it('counts no failed build when storage failed the build step, and tells the version and engine', async () => {
    const m = new WorkerMetrics({
      ...env(),
      engine: { info: { name: 'podman', version: '4.3.1' } } as unknown as Engine,
    });
    const failedBuild = (error: WorkerError) =>
      m.taskReport({
        kind: 'learn',
        uuid: 'u',
        steps: [],
        status: 'failed',
        failedStep: 'build-workflow',
        error,
      });
    failedBuild(
      new WorkerError('STORAGE_FAILED', 'storage GET /problem/x answered 503', { retryable: true }),
    );
    failedBuild(new WorkerError('CANCELLED', 'cancelled'));
    let scrape = new Scrape(await m.scrape());
    expect(
      scrape.sample('compute_worker_image_builds_total', { role: 'workflow', result: 'failed' }),
    ).toBeUndefined();
    failedBuild(new WorkerError('BUILD_FAILED', 'RUN exited with code 1'));
    scrape = new Scrape(await m.scrape());
    expect(
      scrape.value('compute_worker_image_builds_total', { role: 'workflow', result: 'failed' }),
    ).toBe(1);
    expect(
      scrape.value('compute_worker_build_info', {
        version: workerVersion(),
        engine: 'podman',
        engine_version: '4.3.1',
      }),
    ).toBe(1);
  });

  it('reads the image cache as of its last trim', async () => {
    const cache = { lastSummary: undefined as undefined | { images: number; bytes: number } };
    const m = new WorkerMetrics({ ...env(), imageCache: cache as never });
    let scrape = new Scrape(await m.scrape());
    // Before the first trim (at start-up, before the metrics are served), nothing is known.
    expect(scrape.value('compute_worker_image_cache_bytes')).toBe(0);
    cache.lastSummary = { images: 3, bytes: 123_456 };
    scrape = new Scrape(await m.scrape());
    expect(scrape.value('compute_worker_image_cache_images')).toBe(3);
    expect(scrape.value('compute_worker_image_cache_bytes')).toBe(123_456);
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
