import type { OrchestratorClient, StepUsage, StorageClient } from '../clients/types.js';
import type { ImageCache } from '../engine/image-cache.js';
import type { Engine, RunLimits } from '../engine/types.js';
import type { UsernsPool } from '../engine/userns-pool.js';
import type { Gpu } from '../gpu/discover.js';
import type { GpuPool } from '../gpu/pool.js';

export type TaskKind = 'learn' | 'predict';

export interface DataCacheSettings {
  /** Index, locks and leases; the same folder for every worker of the host. */
  dir: string;
  /** Most bytes of the cached sets together. */
  maxBytes: number;
}

/** Every step, in SPEC order: reports list the steps a task went through in this order. */
export const STEP_ORDER = [
  'build-workflow',
  'build-submission',
  'stage',
  'detarget',
  'train',
  'perf',
  'predict',
  'upload',
  'report',
] as const;

export type StepName = (typeof STEP_ORDER)[number];

/** What a task tells the one watching it: a terminal, a JSON result, the daemon's journal. */
export type TaskEvent =
  | { type: 'step-start'; step: StepName }
  | { type: 'step-end'; step: StepName; ms: number; note?: string }
  | { type: 'staged'; name: string; bytes: number }
  /** Where a data set's volume came from: the host's data cache, staged into it, or the task's own. */
  | { type: 'data-set'; set: string; source: DataSetSource }
  | { type: 'log'; step: StepName; line: string; stream: 'stdout' | 'stderr' }
  | { type: 'warning'; step: StepName; message: string };

export type DataSetSource = 'cache' | 'staged-into-cache' | 'staged';

/** Everything a task needs from the world, fixed for the worker's lifetime. */
export interface TaskEnv {
  engine: Engine;
  storage: StorageClient;
  orchestrator: OrchestratorClient;
  workerId: string;
  limits: RunLimits;
  /** Bound of the submission's train step. */
  learnTimeoutMs: number;
  /** Bound of the submission's predict step. */
  predictTimeoutMs: number;
  /** Bound of the workflow's own steps (detarget, perf). */
  workflowTimeoutMs: number;
  logTailLines: number;
  logTailBytes: number;
  /** Parent of the task's private temp folder. */
  tmpDir: string;
  /** GPUs handed to submissions; absent when no task gets one. */
  gpus?: TaskGpus;
  /** Most bytes the writable volumes of one container step may hold (--disk-limit). */
  diskLimitBytes: number;
  /**
   * How --disk-limit is held (--disk-bound): `auto` (default) gives each writing step a
   * filesystem of that size where the host allows it, else polls; `poll` always polls.
   */
  diskBound?: 'auto' | 'poll';
  /** No new task is taken while the engine's storage or tmpDir has less free (--min-free-disk). */
  minFreeDiskBytes: number;
  /** Cap on the prediction bytes read back from the submission (--max-prediction-size). */
  maxPredictionBytes: number;
  /** Cap on a model's unpacked bytes, left by the submission or staged from storage (--max-model-size). */
  maxModelBytes: number;
  /** Cap of a blob without Content-Length spooled to the temp folder (default 10 GiB). */
  spoolCapBytes?: number;
  /**
   * The host's cache of staged data sets (--data-cache-size, --data-cache-dir), shared by
   * its workers; none: every task stages its data itself.
   */
  dataCache?: DataCacheSettings;
  /** The worker's bounded image cache (--image-cache-size); none: images are kept. */
  imageCache?: ImageCache;
  /**
   * Passwords and private folders of this worker (its state and temp folders) that no
   * report leaves with; the usual host folders are left out of reports anyway.
   */
  privateWords?: readonly string[];
  /** Where each container gets host ids of its own (--container-userns); none: shared. */
  userns?: UsernsPool;
  /** Why containers share the engine's namespace, where they do. */
  usernsShared?: string;
}

/** One execution of one task. */
export interface TaskRun {
  /** Aborting cancels the task: containers killed and removed, requests dropped. */
  signal: AbortSignal;
  onEvent?: (event: TaskEvent) => void;
  /** The GPUs this task holds (given to the submission's containers only). */
  gpus?: readonly Gpu[];
  /** What each container step that ran cost, by step: filled in as the steps end. */
  usage?: Partial<Record<StepName, StepUsage>>;
}

export interface StepTiming {
  step: StepName;
  ms: number;
  note?: string;
}

/** The worker's GPUs: the pool it hands out, and how many each task of a kind gets. */
export interface TaskGpus {
  pool: GpuPool;
  learn: number;
  predict: number;
  /** CDI kind of the devices (nvidia.com/gpu). */
  cdiKind: string;
}
