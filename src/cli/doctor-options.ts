import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Interfaces } from '@oclif/core';
import { createOrchestratorClient } from '../clients/config.js';
import type { DoctorOptions } from '../doctor/doctor.js';
import { parseGpuSelection } from '../gpu/pool.js';
import type { runFlags } from './flags.js';
import {
  dataCacheFor,
  diskLimits,
  engineOptions,
  ledgerFile,
  password,
  prepareStateDir,
  runLimits,
  storageFromFlags,
  type TaskFlagValues,
  workerId,
} from './settings.js';

/** doctor takes every flag of run: it checks NSQ and the GPU pool as run uses them. */
export type DoctorFlagValues = TaskFlagValues & Interfaces.InferredFlags<typeof runFlags>;

/** What doctor checks, from the flags: the state folder and local services are prepared. */
export async function doctorOptions(flags: DoctorFlagValues): Promise<DoctorOptions> {
  const stateDir = await prepareStateDir(flags);
  const storage = await storageFromFlags(flags, stateDir);
  const limits = runLimits(flags);
  const disk = diskLimits(flags);
  const dataCache = dataCacheFor(flags);
  return {
    engine: engineOptions(flags),
    limits,
    storage,
    orchestrator: flags['orchestrator-host']
      ? { host: flags['orchestrator-host'], port: flags['orchestrator-port'] }
      : { ledgerFile: ledgerFile(flags, stateDir) },
    nsq: {
      lookupdUrls: flags['nsqlookupd-urls'] ?? [],
      nsqdAddresses: flags['nsqd-tcp-addresses'] ?? [],
      learnTimeoutMs: flags['learn-timeout'],
      predictTimeoutMs: flags['predict-timeout'],
    },
    gpu: {
      learnGpus: flags['learn-gpus'],
      predictGpus: flags['predict-gpus'],
      learnParallelism: flags['learn-parallelism'],
      predictParallelism: flags['predict-parallelism'],
      selection: parseGpuSelection(flags.gpus ?? 'all'),
      cdiKind: flags['gpu-cdi-kind'],
      limits,
    },
    disk: {
      limitBytes: disk.diskLimitBytes,
      minFreeBytes: disk.minFreeDiskBytes,
      tmpDir: tmpdir(),
      bound: disk.diskBound,
    },
    stateDir,
    containerUserns: flags['container-userns'],
    ...(flags['orchestrator-host']
      ? {
          orchestratorClient: createOrchestratorClient({
            host: flags['orchestrator-host'],
            port: flags['orchestrator-port'],
            user: flags['orchestrator-user'],
            password: await password(flags, 'orchestrator'),
            ledgerFile: ledgerFile(flags, stateDir),
          }),
        }
      : {}),
    ...(dataCache ? { dataCache } : {}),
    imageCache: {
      workerId: await workerId(stateDir),
      maxBytes: flags['image-cache-size'],
      file: join(stateDir, 'image-cache.json'),
    },
  };
}
