import { access, constants } from 'node:fs/promises';
import { dirname } from 'node:path';
import { request } from 'undici';
import { serviceBaseUrl } from '../clients/http.js';
import type { OrchestratorClient, StorageClient } from '../clients/types.js';
import { createEngine, engineFor } from '../container-engine.js';
import type { Engine, EngineOptions, RunLimits } from '../engine/types.js';
import { usernsFor } from '../engine/userns-pool.js';
import { baseStoreCheck } from './base-store.js';
import { buildNamespaceCheck } from './build-user.js';
import { builderCheck } from './builder.js';
import { type Check, fail, pass } from './check.js';
import { checkCredentials } from './credentials.js';
import { dataCacheCheck } from './data-cache.js';
import { checkDisk } from './disk.js';
import { diskBoundCheck } from './disk-bound.js';
import { checkGpus, type GpuCheckOptions } from './gpu.js';
import { processGroupCheck, stateFolderCheck } from './host.js';
import { imageCacheCheck } from './image-cache.js';
import { buildUserImagesCheck, type IsLive, liveWorker, orphansCheck } from './leftovers.js';
import { checkNsq, type NsqCheckOptions } from './nsq.js';
import { probeEngine } from './probe.js';

export interface DoctorOptions {
  engine: EngineOptions;
  limits: RunLimits;
  storage: StorageClient;
  /** The orchestrator's host and port, or the local ledger file when the host is blank. */
  orchestrator: { host: string; port: number } | { ledgerFile: string };
  nsq: NsqCheckOptions;
  busyboxPath?: string;
  gpu?: GpuCheckOptions;
  /** --disk-limit and --min-free-disk, and the worker's temp folder, for the free-space checks. */
  disk?: { limitBytes: number; minFreeBytes: number; tmpDir: string; bound?: 'auto' | 'poll' };
  /** The worker's image cache: its worker id, --image-cache-size and last-use file. */
  imageCache?: { workerId: string; maxBytes: number; file: string };
  /** The host's data cache (--data-cache-dir, --data-cache-size); undefined when it is off. */
  dataCache?: { dir: string; maxBytes: number };
  /** The orchestrator's client, for the credentials check (the local ledger has none). */
  orchestratorClient?: OrchestratorClient;
  /** The state folder: does it persist, and is the daemon on it in a group of its own. */
  stateDir?: string;
  /** Whether a worker id belongs to a live worker (default: its lock beside its temp folder). */
  isLive?: IsLive;
  /** --container-userns: the probe container gets a namespace as task containers would. */
  containerUserns?: 'auto' | 'off';
}

/** Every check of the host, in the order a person fixes them: engine, isolation, services, NSQ. */
export async function runDoctor(options: DoctorOptions): Promise<Check[]> {
  let engine: Engine | undefined;
  let noEngine: Check | undefined;
  try {
    engine = await createEngine(options.engine);
  } catch (error) {
    noEngine = fail('engine', 'no usable container engine', error);
  }
  // The checks do not depend on each other: they run at once, and are listed in order.
  const none = Promise.resolve([] as Check[]);
  const parts = await Promise.all([
    engine ? engineChecks(engine, options) : none,
    options.gpu ? checkGpus(engine, { busyboxPath: options.busyboxPath, ...options.gpu }) : none,
    options.disk ? checkDisk({ ...options.disk, engineStorage: engine?.info.graphRoot }) : none,
    options.stateDir ? stateChecks(options.stateDir) : none,
    dataCacheCheck(engine, options.dataCache).then((c) => [c]),
    checkStorage(options.storage).then((c) => [c]),
    checkCredentials('storage', options.storage).then((c) => [c]),
    checkOrchestrator(options.orchestrator).then((c) => [c]),
    options.orchestratorClient
      ? checkCredentials('orchestrator', options.orchestratorClient).then((c) => [c])
      : none,
    checkNsq(options.nsq),
  ]);
  return [...(noEngine ? [noEngine] : []), ...parts.flat()];
}

async function engineChecks(engine: Engine, options: DoctorOptions): Promise<Check[]> {
  // Its builds are doctor's, not a task's: --disk-limit and --max-context-size (which may be
  // below busybox) do not bound them.
  const unbounded = engineFor(engine.info, {
    ...options.engine,
    buildDiskLimitBytes: undefined,
    maxContextBytes: undefined,
  });
  const userns = await usernsFor(options.containerUserns ?? 'auto', engine);
  const [probe, namespace, cache, bound, orphans, buildUserImages, bases] = await Promise.all([
    probeEngine(unbounded, { limits: options.limits, busyboxPath: options.busyboxPath, userns }),
    buildNamespaceCheck(unbounded, options.engine, options.busyboxPath),
    options.imageCache ? imageCacheCheck(engine, options.imageCache) : undefined,
    options.disk ? diskBoundCheck(engine.info, options.disk.tmpDir, options.disk.bound) : undefined,
    orphansCheck(engine, options.isLive ?? liveWorker),
    buildUserImagesCheck(engine, options.engine),
    baseStoreCheck(engine),
  ]);
  return [
    ...probe,
    builderCheck(engine.info, options.engine.workflowBuildPolicy),
    namespace,
    buildUserImages,
    bases,
    ...(cache ? [cache] : []),
    ...(bound ? [bound] : []),
    orphans,
  ];
}

async function stateChecks(stateDir: string): Promise<Check[]> {
  return Promise.all([stateFolderCheck(stateDir), processGroupCheck(stateDir)]);
}

async function checkStorage(storage: StorageClient): Promise<Check> {
  try {
    await storage.health(AbortSignal.timeout(10_000));
    return pass('storage', `${storage.description} answers`);
  } catch (error) {
    return fail('storage', `${storage.description} is not usable`, error);
  }
}

async function checkOrchestrator(target: DoctorOptions['orchestrator']): Promise<Check> {
  if ('ledgerFile' in target) {
    try {
      await access(dirname(target.ledgerFile), constants.W_OK);
      return pass('orchestrator', `local orchestrator ledger ${target.ledgerFile} is writable`);
    } catch (error) {
      return fail(
        'orchestrator',
        `local orchestrator ledger ${target.ledgerFile} cannot be written`,
        error,
        'pass --orchestrator-ledger or --state-dir with a writable folder',
      );
    }
  }
  // The orchestrator API has no health call: any HTTP answer shows it is there.
  try {
    const url = serviceBaseUrl('orchestrator', target.host, target.port);
    const res = await request(url, { method: 'GET', headersTimeout: 10_000, bodyTimeout: 10_000 });
    await res.body.dump();
    return pass('orchestrator', `orchestrator at ${url.origin} answers HTTP`);
  } catch (error) {
    return fail(
      'orchestrator',
      `orchestrator at ${target.host}:${target.port} does not answer`,
      error,
    );
  }
}

/** The verdict: a host with any failed check cannot run tasks. */
export function verdict(checks: Check[]): { ready: boolean; summary: string } {
  const failed = checks.filter((c) => c.status === 'fail').length;
  const warned = checks.filter((c) => c.status === 'warn').length;
  if (failed)
    return {
      ready: false,
      summary: `not ready: ${failed} check(s) failed${warned ? `, ${warned} warning(s)` : ''}`,
    };
  return {
    ready: true,
    summary: `ready to run tasks${warned ? `, with ${warned} warning(s)` : ''}`,
  };
}
