import type { OrchestratorClient, StorageClient } from '../clients/types.js';
import type { Engine, RunLimits } from '../engine/types.js';

export type TaskKind = 'learn' | 'predict';

export type StepName =
  | 'build-workflow'
  | 'build-submission'
  | 'stage'
  | 'detarget'
  | 'train'
  | 'perf'
  | 'predict'
  | 'upload'
  | 'report';

/** What a task tells the one watching it: a terminal, a JSON result, the daemon's journal. */
export type TaskEvent =
  | { type: 'step-start'; step: StepName }
  | { type: 'step-end'; step: StepName; ms: number; note?: string }
  | { type: 'staged'; name: string; bytes: number }
  | { type: 'log'; step: StepName; line: string; stream: 'stdout' | 'stderr' };

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
  /** Cap of a blob without Content-Length spooled to the temp folder (default 10 GiB). */
  spoolCapBytes?: number;
}

/** One execution of one task. */
export interface TaskRun {
  /** Aborting cancels the task: containers killed and removed, requests dropped. */
  signal: AbortSignal;
  onEvent?: (event: TaskEvent) => void;
}

export interface StepTiming {
  step: StepName;
  ms: number;
  note?: string;
}
