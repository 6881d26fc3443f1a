import { BaseCommand } from '../src/cli/base-command.js';
import { runFlags, taskFlags } from '../src/cli/flags.js';
import { buildTaskEnv } from '../src/cli/settings.js';
import { WorkerError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { Health } from '../src/worker/health.js';
import { Journal } from '../src/worker/journal.js';
import { WorkerMetrics } from '../src/worker/metrics.js';
import {
  type MetricsServer,
  parseListenAddress,
  startMetricsServer,
} from '../src/worker/metrics-server.js';
import { Worker } from '../src/worker/worker.js';

export default class Run extends BaseCommand {
  static override summary = 'Take learn and predict tasks from NSQ and run them.';
  static override description =
    `Consumes topic "train" (learn tasks) and topic "prediction" (predict tasks) on channel
"compute", finding nsqd through nsqlookupd or connecting to nsqd directly. Each task is
claimed from the orchestrator, run in hardened containers, and reported. Passing errors are
retried with backoff; errors of the task itself are reported failed at once. SIGTERM or
SIGINT drains: no new tasks, running ones get --shutdown-grace, then are cancelled and
requeued. SIGHUP is logged and changes nothing (the log goes to stdout: nothing to reopen).
Engine commands run in process groups of their own, so a signal sent to the worker's whole
group reaches only the worker. Flags of the original worker, written with one dash, are accepted as they are.`;
  static override examples = [
    '<%= config.bin %> run --nsqlookupd-urls 10.0.0.5:4161 --storage-host storage --orchestrator-host orchestrator',
    '<%= config.bin %> run -nsqlookupd-urls 127.0.0.1:4161 -learn-timeout 20m0s -learn-parallelism 2',
    '<%= config.bin %> run --nsqd-tcp-addresses 127.0.0.1:4150 --log-format json',
  ];
  static override flags = { ...runFlags, ...taskFlags };

  async run(): Promise<void> {
    const { flags } = await this.parse(Run);
    const lookupdUrls = flags['nsqlookupd-urls'] ?? [];
    const nsqdAddresses = flags['nsqd-tcp-addresses'] ?? [];
    if (lookupdUrls.length === 0 && nsqdAddresses.length === 0) {
      throw new WorkerError('CONFIG_INVALID', 'no NSQ to take tasks from', {
        hint: 'pass --nsqlookupd-urls host:4161 or --nsqd-tcp-addresses host:4150',
      });
    }
    if (flags['learn-parallelism'] === 0 && flags['predict-parallelism'] === 0) {
      throw new WorkerError('CONFIG_INVALID', 'this worker would take no task', {
        hint: 'give --learn-parallelism or --predict-parallelism (or both) at least 1',
      });
    }
    const metricsAt = flags['metrics-address']
      ? parseListenAddress(flags['metrics-address'])
      : undefined;
    const log = createLogger({ level: flags['log-level'], format: flags['log-format'] });
    const parallelism = {
      learn: flags['learn-parallelism'],
      predict: flags['predict-parallelism'],
    };
    // The metrics need the engine the env finds; the clients made with it count their errors.
    let metrics: WorkerMetrics | undefined;
    const env = await buildTaskEnv(flags, 'daemon', parallelism, (service, code) =>
      metrics?.serviceError(service, code),
    );
    log.info(
      {
        engine: env.engine.info,
        storage: env.storage.description,
        orchestrator: env.orchestrator.description,
        gpus: env.gpus?.pool.gpus.map((g) => `${g.index}:${g.uuid}`),
      },
      'engine and services',
    );
    if (env.usernsShared && flags['container-userns'] !== 'off') {
      log.warn(
        { reason: env.usernsShared },
        "containers share the engine's user namespace: one task's processes count against the others' process limit (see compute-worker doctor, check userns)",
      );
    }
    metrics = metricsAt ? new WorkerMetrics(env) : undefined;
    const worker = new Worker({
      env,
      log,
      journal: new Journal(env.stateDir),
      stateDir: env.stateDir,
      retry: {
        maxAttempts: flags['max-attempts'],
        baseDelayMs: flags['retry-delay'],
        maxDelayMs: flags['retry-max-delay'],
      },
      lookupdUrls,
      nsqdAddresses,
      parallelism,
      pollIntervalMs: flags['lookupd-poll-interval'],
      shutdownGraceMs: flags['shutdown-grace'],
      metrics,
      taskLogs: {
        maxBytes: flags['task-log-size'],
        retentionMs: flags['task-log-retention'],
      },
    });

    let signals = 0;
    const stopped = new Promise<void>((resolve) => {
      const onSignal = (signal: NodeJS.Signals) => {
        signals++;
        log.warn({ signal }, signals === 1 ? 'stopping: draining running tasks' : 'stopping now');
        worker.stop(signals > 1).then(resolve, resolve);
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
    // A closed terminal or a supervisor's "reload": its default would end the worker at once.
    process.on('SIGHUP', () => {
      log.info(
        { signal: 'SIGHUP' },
        'SIGHUP: nothing to reload or reopen (the log goes to stdout); the worker goes on. SIGTERM drains',
      );
    });
    let server: MetricsServer | undefined;
    let health: Health | undefined;
    // The port is taken before any subscription: a busy one stops the worker before NSQ
    // delivers it anything.
    if (metrics && metricsAt) {
      const watched = new Health(env.engine, () => metrics.nsqdConnectionCount);
      health = watched;
      // Readiness is known from the first answer on.
      await watched.pingEngine();
      server = await startMetricsServer(metricsAt, {
        scrape: () => metrics.scrape(),
        contentType: metrics.registry.contentType,
        live: () => watched.live(),
        ready: () => {
          const verdict = watched.ready();
          const outage = worker.notTaking;
          if (!outage) return verdict;
          return { ok: false, reason: verdict.ok ? outage : `${verdict.reason}; ${outage}` };
        },
        status: () => worker.status(metrics.nsqdConnectionCount),
      }).catch(async (error) => {
        watched.close();
        await env.release();
        throw error;
      });
      log.info(
        { address: server.address },
        `metrics on http://${server.address}/metrics (status: /status, health: /healthz, /readyz)`,
      );
    }
    await worker.start();
    await stopped;
    health?.close();
    await server?.close();
    await Promise.all([env.storage.close(), env.orchestrator.close()]);
    await env.release();
  }
}
