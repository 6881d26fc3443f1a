import { access, constants } from 'node:fs/promises';
import { dirname } from 'node:path';
import { request } from 'undici';
import { serviceBaseUrl } from '../clients/http.js';
import type { StorageClient } from '../clients/types.js';
import { createEngine, engineFor } from '../engine/engine.js';
import type { Engine, EngineOptions, RunLimits } from '../engine/types.js';
import { buildNamespaceCheck } from './build-user.js';
import { builderCheck } from './builder.js';
import { type Check, fail, pass } from './check.js';
import { checkDisk } from './disk.js';
import { checkGpus, type GpuCheckOptions } from './gpu.js';
import { imageCacheCheck } from './image-cache.js';
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
  disk?: { limitBytes: number; minFreeBytes: number; tmpDir: string };
  /** The worker's image cache: its worker id, --image-cache-size and last-use file. */
  imageCache?: { workerId: string; maxBytes: number; file: string };
}

/** Every check of the host, in the order a person fixes them: engine, isolation, services, NSQ. */
export async function runDoctor(options: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = [];
  let engine: Engine | undefined;
  try {
    engine = await createEngine(options.engine);
  } catch (error) {
    checks.push(fail('engine', 'no usable container engine', error));
  }
  if (engine) {
    checks.push(
      ...(await probeEngine(engine, { limits: options.limits, busyboxPath: options.busyboxPath })),
    );
    checks.push(builderCheck(engine.info, options.engine.workflowBuildPolicy));
    // Its build is doctor's, not a task's: --disk-limit (which may be below busybox) does not bound it.
    const unbounded = engineFor(engine.info, { ...options.engine, buildDiskLimitBytes: undefined });
    checks.push(await buildNamespaceCheck(unbounded, options.engine, options.busyboxPath));
    if (options.imageCache) checks.push(await imageCacheCheck(engine, options.imageCache));
  }
  if (options.gpu) {
    checks.push(...(await checkGpus(engine, { busyboxPath: options.busyboxPath, ...options.gpu })));
  }
  if (options.disk) {
    checks.push(...(await checkDisk({ ...options.disk, engineStorage: engine?.info.graphRoot })));
  }
  checks.push(await checkStorage(options.storage));
  checks.push(await checkOrchestrator(options.orchestrator));
  checks.push(...(await checkNsq(options.nsq)));
  return checks;
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
