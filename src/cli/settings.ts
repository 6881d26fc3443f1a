import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Interfaces } from '@oclif/core';
import { parseIdRange } from '../build/userns.js';
import {
  createOrchestratorClient,
  createStorageClient,
  readPasswordFile,
} from '../clients/config.js';
import type { ServiceErrorListener } from '../clients/http.js';
import { containerOwner } from '../config/owner.js';
import {
  defaultDataCacheDir,
  defaultStateDir,
  execRunsDir,
  RUN_TMP_FILE,
  workerLiveDir,
  workerTmpDir,
} from '../config/paths.js';
import { lockStateDir } from '../config/state-lock.js';
import { createEngine } from '../container-engine.js';
import { ImageCache } from '../engine/image-cache.js';
import { DEFAULT_LIMITS } from '../engine/limits.js';
import { releaseSizedDisks } from '../engine/sized-disk-release.js';
import type { Engine, EngineOptions, RunLimits } from '../engine/types.js';
import { usernsFor } from '../engine/userns-pool.js';
import { WorkerError } from '../errors.js';
import { discoverGpus } from '../gpu/discover.js';
import { checkCapacity, GpuPool, parseGpuSelection, selectPool } from '../gpu/pool.js';
import type { TaskEnv, TaskGpus } from '../tasks/context.js';
import type { taskFlags } from './flags.js';

/** The parsed values of `taskFlags`: their types come from the definitions in flags.ts. */
export type TaskFlagValues = Interfaces.InferredFlags<typeof taskFlags>;

/** Task slots of each kind: the daemon's parallelism, one each for a task run by hand. */
export interface Parallelism {
  learn: number;
  predict: number;
}

/** The GPU pool, when tasks get GPUs: found with nvidia-smi once, refused when too small. */
export async function gpuSettings(
  flags: TaskFlagValues,
  parallelism: Parallelism,
): Promise<TaskGpus | undefined> {
  const learn = flags['learn-gpus'];
  const predict = flags['predict-gpus'];
  if (learn + predict === 0) return undefined;
  const pool = selectPool(await discoverGpus(), parseGpuSelection(flags.gpus ?? 'all'));
  checkCapacity(pool, {
    learnParallelism: parallelism.learn,
    learnGpus: learn,
    predictParallelism: parallelism.predict,
    predictGpus: predict,
  });
  return { pool: new GpuPool(pool), learn, predict, cdiKind: flags['gpu-cdi-kind'] };
}

export function engineOptions(flags: TaskFlagValues): EngineOptions {
  // A malformed range is refused at start, not at every build.
  if (flags['build-userns'] && flags['build-userns'] !== 'auto')
    parseIdRange(flags['build-userns']);
  return {
    engine: flags.engine,
    enginePath: flags['engine-path'],
    ociRuntime: flags['oci-runtime'],
    buildTimeoutMs: flags['build-timeout'] ?? flags['docker-timeout'],
    callTimeoutMs: flags['docker-timeout'],
    workflowBuildPolicy: flags['workflow-build-policy'],
    buildLimits: {
      memoryBytes: flags['build-memory'] ?? flags.memory,
      cpus: flags['build-cpus'] ?? flags.cpus,
      pidsLimit: flags['build-pids-limit'] ?? flags['pids-limit'],
    },
    buildUserns: flags['build-userns'],
    buildDiskLimitBytes: flags['disk-limit'],
    maxContextBytes: flags['max-context-size'] ?? flags['disk-limit'],
    engineHost: flags['engine-host'],
    buildUser: flags['build-user'],
  };
}

export function runLimits(flags: TaskFlagValues): RunLimits {
  containerOwner(flags.user); // a non-numeric user is refused before anything runs
  return {
    ...DEFAULT_LIMITS,
    memoryBytes: flags.memory,
    cpus: flags.cpus,
    pidsLimit: flags['pids-limit'],
    tmpfsBytes: flags['tmpfs-size'],
    shmBytes: flags['shm-size'],
    user: flags.user,
  };
}

export async function password(
  flags: TaskFlagValues,
  service: 'storage' | 'orchestrator',
): Promise<string> {
  const file = flags[`${service}-password-file`];
  return file ? readPasswordFile(file) : flags[`${service}-password`];
}

/** The worker's id survives restarts, so its containers left by a crash can be found by label. */
export async function workerId(stateDir: string): Promise<string> {
  const file = join(stateDir, 'worker-id');
  try {
    const id = (await readFile(file, 'utf8')).trim();
    if (/^[0-9a-f-]{36}$/.test(id)) return id;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const id = randomUUID();
  await writeFile(file, `${id}\n`, { mode: 0o644 });
  return id;
}

export async function prepareStateDir(flags: TaskFlagValues): Promise<string> {
  const dir = flags['state-dir'] ?? defaultStateDir();
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new WorkerError('CONFIG_INVALID', `cannot create the state folder ${dir}`, {
      cause: error,
      detail: (error as Error).message,
      hint: 'pass --state-dir with a folder this user can write',
    });
  }
  await prepareLocalServices(flags, dir);
  return dir;
}

/**
 * The built-in local storage folder and orchestrator ledger, where they are the defaults
 * inside the state folder: created empty, like the state folder, so a fresh host works.
 * A folder or ledger named by a flag is left for doctor to check: a typo stays visible.
 */
async function prepareLocalServices(flags: TaskFlagValues, stateDir: string): Promise<void> {
  if (!flags['storage-host'].trim() && !flags['storage-dir']) {
    await mkdir(join(stateDir, 'storage'), { recursive: true, mode: 0o700 });
  }
  if (!flags['orchestrator-host'].trim() && !flags['orchestrator-ledger']) {
    await writeFile(ledgerFile(flags, stateDir), '', { flag: 'a', mode: 0o600 });
  }
}

/**
 * The worker's temp folder, in a shared /tmp: it must be a real folder of this user that
 * nobody else can enter, not something another user put there first.
 */
async function prepareTmpDir(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await lstat(dir);
  const uid = process.getuid?.();
  if (!info.isDirectory() || (uid !== undefined && info.uid !== uid) || (info.mode & 0o077) !== 0) {
    throw new WorkerError(
      'CONFIG_INVALID',
      `the temp folder ${dir} is not a private folder of this user`,
      {
        hint: 'remove it, or set TMPDIR to a folder only this user can write',
      },
    );
  }
  return dir;
}

/** Storage from the flags: the HTTP service, or the local folder when the host is blank. */
export async function storageFromFlags(
  flags: TaskFlagValues,
  stateDir: string,
  onError?: ServiceErrorListener,
) {
  return createStorageClient({
    onError,
    host: flags['storage-host'],
    port: flags['storage-port'],
    user: flags['storage-user'],
    password: await password(flags, 'storage'),
    localDir: flags['storage-dir'] ?? join(stateDir, 'storage'),
  });
}

/** The local orchestrator's ledger file, used when the orchestrator host is blank. */
export function ledgerFile(flags: TaskFlagValues, stateDir: string): string {
  return flags['orchestrator-ledger'] ?? join(stateDir, 'orchestrator.jsonl');
}

/** --disk-limit, and --min-free-disk (default: twice the limit). */
export function diskLimits(flags: TaskFlagValues): {
  diskLimitBytes: number;
  minFreeDiskBytes: number;
  diskBound: 'auto' | 'poll';
} {
  const diskLimitBytes = flags['disk-limit'];
  if (diskLimitBytes <= 0) {
    throw new WorkerError('CONFIG_INVALID', '--disk-limit must be more than 0', {
      hint: 'e.g. --disk-limit 20g',
    });
  }
  return {
    diskLimitBytes,
    minFreeDiskBytes: flags['min-free-disk'] ?? 2 * diskLimitBytes,
    diskBound: flags['disk-bound'],
  };
}

/** The host's staged data cache, when --data-cache-size is more than 0. */
export function dataCacheFor(flags: TaskFlagValues): { dir: string; maxBytes: number } | undefined {
  const maxBytes = flags['data-cache-size'];
  if (maxBytes <= 0) return undefined;
  return { dir: resolve(flags['data-cache-dir'] ?? defaultDataCacheDir()), maxBytes };
}

/** Made at start, so a folder this user cannot write is a configuration error, not every task's. */
async function prepareDataCacheDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new WorkerError('CONFIG_INVALID', `cannot create the data cache folder ${dir}`, {
      cause: error,
      detail: (error as Error).message,
      hint: 'pass --data-cache-dir with a folder this user can write, or --data-cache-size 0',
    });
  }
}

/** The worker's bounded image cache; its last-use records live in the state folder. */
export function imageCacheFor(
  flags: TaskFlagValues,
  engine: Engine,
  stateDir: string,
  id: string,
): ImageCache {
  return new ImageCache({
    engine,
    workerId: id,
    maxBytes: flags['image-cache-size'],
    file: join(stateDir, 'image-cache.json'),
  });
}

/**
 * Everything a task needs, from the flags: detects the engine and opens the clients.
 * `owner: 'daemon'` (run) locks the state folder for the life of the process and keeps
 * the worker id stored there, so a restart finds what a crash of that same worker left.
 * `owner: 'once'` (task exec) takes no lock on the state folder, so it works beside a
 * running daemon: it gets a fresh worker id and temp folder of its own, which no daemon's
 * recovery touches while it lives, and holds the lock of `<state-dir>/exec/<its id>`
 * (see worker/dead-runs.ts for what happens once it is dead).
 */
export async function buildTaskEnv(
  flags: TaskFlagValues,
  owner: 'daemon' | 'once' = 'once',
  parallelism: Parallelism = { learn: 1, predict: 1 },
  onServiceError?: ServiceErrorListener,
): Promise<TaskEnv & { stateDir: string; release: () => Promise<void> }> {
  // nvidia-smi is asked once, before anything is locked or created.
  const gpus = await gpuSettings(flags, parallelism);
  const stateDir = await prepareStateDir(flags);
  runLimits(flags); // a bad --user is refused before anything is locked or created
  const lock = owner === 'daemon' ? await lockStateDir(stateDir) : undefined;
  const id = lock ? await workerId(stateDir) : randomUUID();
  // A task exec holds a folder of its own id for its life: when it is killed, the next
  // command on the state folder finds the lock dead and removes what it left.
  const runDir = lock ? undefined : join(execRunsDir(stateDir), id);
  const runLock = runDir ? await lockRunDir(runDir) : undefined;
  const tmpDir = await prepareTmpDir(workerTmpDir(id));
  const liveLock = await lockRunDir(workerLiveDir(id));
  // TMPDIR may differ for the command that cleans up after this one.
  if (runDir) await writeFile(join(runDir, RUN_TMP_FILE), tmpDir);
  // At the end, every task's temp folder is gone already: the worker's own goes too (a
  // daemon's is made again at its next start).
  const release = async () => {
    // Each task released its sized filesystems; a failed release is not removed through.
    await releaseSizedDisks(tmpDir).catch(() => undefined);
    await rm(tmpDir, { recursive: true, force: true });
    if (runDir) await rm(runDir, { recursive: true, force: true });
    liveLock.release();
    await rm(workerLiveDir(id), { recursive: true, force: true });
    lock?.release();
    runLock?.release();
  };
  try {
    // A one-off `task exec` reuses a recent `podman info` (see info-cache.ts); a daemon asks once.
    const infoCache = lock ? undefined : join(stateDir, 'engine-info.json');
    const services = await servicesFromFlags(
      flags,
      { stateDir, tmpDir, id, onServiceError },
      gpus,
      infoCache,
    );
    // Only a daemon keeps an image cache: its id, and so its images, outlive the process.
    const imageCache = lock ? imageCacheFor(flags, services.engine, stateDir, id) : undefined;
    return { ...services, ...(imageCache ? { imageCache } : {}), workerId: id, release };
  } catch (error) {
    await release();
    throw error;
  }
}

async function lockRunDir(dir: string) {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return lockStateDir(dir);
}

async function servicesFromFlags(
  flags: TaskFlagValues,
  {
    stateDir,
    tmpDir,
    id,
    onServiceError,
  }: { stateDir: string; tmpDir: string; id: string; onServiceError?: ServiceErrorListener },
  gpus: TaskGpus | undefined,
  infoCacheFile?: string,
) {
  // The engine CLI runs in the worker's private temp folder (conmon drops files there).
  // Its builds carry the worker's id, so that a restart finds those a crash left.
  const engine = await createEngine({
    ...engineOptions(flags),
    workDir: tmpDir,
    infoCacheFile,
    owner: id,
  });
  const storage = await storageFromFlags(flags, stateDir, onServiceError);
  const orchestratorPassword = await password(flags, 'orchestrator');
  const orchestrator = createOrchestratorClient({
    onError: onServiceError,
    host: flags['orchestrator-host'],
    port: flags['orchestrator-port'],
    user: flags['orchestrator-user'],
    password: orchestratorPassword,
    ledgerFile: ledgerFile(flags, stateDir),
  });
  // What no report to the orchestrator may name (see tasks/report-body.ts).
  const privateWords = [
    resolve(stateDir),
    tmpDir,
    await password(flags, 'storage'),
    orchestratorPassword,
  ].filter(Boolean);
  const userns = await usernsFor(flags['container-userns'], engine);
  const dataCache = dataCacheFor(flags);
  if (dataCache) await prepareDataCacheDir(dataCache.dir);
  return {
    stateDir,
    engine,
    storage,
    orchestrator,
    ...userns,
    limits: runLimits(flags),
    learnTimeoutMs: flags['learn-timeout'],
    predictTimeoutMs: flags['predict-timeout'],
    workflowTimeoutMs: flags['docker-timeout'],
    logTailLines: flags['log-tail-lines'],
    logTailBytes: 256 * 1024,
    tmpDir,
    ...(gpus ? { gpus } : {}),
    ...diskLimits(flags),
    ...(dataCache ? { dataCache } : {}),
    maxPredictionBytes: flags['max-prediction-size'],
    maxModelBytes: flags['max-model-size'],
    privateWords,
  };
}
