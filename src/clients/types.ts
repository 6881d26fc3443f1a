import type { Readable } from 'node:stream';
import type { ModelMetadata } from '../schemas.js';
import type { BlobValidators } from './blob-validators.js';
import type { CredentialAnswers } from './http.js';

/** The storage's object kinds (SPEC.md section 3): each is a route, `/:kind/:uuid`. */
export type StorageKind = 'problem' | 'algo' | 'model' | 'data' | 'prediction';

export interface Blob {
  /** The blob as it arrives; never held whole in memory. Errors on it are WorkerErrors. */
  stream: Readable;
  /** Bytes, from Content-Length (or the file's size) when known. */
  size?: number;
  /** What storage sent about the bytes (digest, ETag), to check them against. */
  validators?: BlobValidators;
}

export interface StorageClient {
  /** Where blobs come from, for logs: "storage http://host:port" or "local storage /path" (never the password). */
  readonly description: string;
  health(signal?: AbortSignal): Promise<void>;
  /** How a call that needs credentials is answered with ours and without (none: a local service). */
  credentialAnswers?(signal?: AbortSignal): Promise<CredentialAnswers>;
  getMetadata(kind: StorageKind, uuid: string, signal?: AbortSignal): Promise<unknown>;
  getModelMetadata(uuid: string, signal?: AbortSignal): Promise<ModelMetadata>;
  getBlob(kind: StorageKind, uuid: string, signal?: AbortSignal): Promise<Blob>;
  /**
   * The validators storage sends with the blob, without its bytes (the download is opened,
   * its headers read, its body dropped). None: this storage cannot say, and nothing staged
   * from it is ever reused.
   */
  blobValidators?(kind: StorageKind, uuid: string, signal?: AbortSignal): Promise<BlobValidators>;
  /** `body` must deliver exactly `size` bytes (sent as Content-Length, which storage requires). */
  uploadModel(
    uuid: string,
    algo: string,
    body: Readable,
    size: number,
    signal?: AbortSignal,
  ): Promise<void>;
  /** Uploads the local file `file` as prediction `uuid` (multipart: uuid, size, blob). */
  uploadPrediction(uuid: string, file: string, signal?: AbortSignal): Promise<void>;
  /** Releases connections; safe to call twice. */
  close(): Promise<void>;
}

export interface LearnDone {
  perf: number;
  train_perf: Record<string, number>;
  test_perf: Record<string, number>;
}

/** What one container step cost (SPEC.md section 7); a figure the host cannot measure is left out. */
export interface StepUsage {
  wall_s: number;
  cpu_s?: number;
  peak_memory_bytes?: number;
  /** What the step left in its writable volumes. */
  written_bytes?: number;
  gpus?: GpuUsage[];
}

export interface GpuUsage {
  uuid: string;
  /** Seconds of the step the GPU was busy: its utilization summed over the samples. */
  busy_s?: number;
  peak_memory_bytes?: number;
}

/** The `usage` of a done or failed report: one entry per container step that ran. */
export interface TaskUsage {
  worker: string;
  host: string;
  steps: Record<string, StepUsage>;
}

/** The `error` of a failed report (SPEC.md section 7): nothing in it names a host path, a password or another task. */
export interface ReportError {
  code: string;
  step?: string;
  fault: 'task' | 'worker';
  message: string;
  retryable: boolean;
  attempts: number;
  /** The last lines of the failing step's output, only when that step ran the submission's image. */
  log_tail?: string[];
}

/** Everything a failed report says besides its status. */
export interface FailedReport {
  error: ReportError;
  usage?: TaskUsage;
}

export interface OrchestratorClient {
  readonly description: string;
  /** How a call that needs credentials is answered with ours and without (none: the local ledger). */
  credentialAnswers?(signal?: AbortSignal): Promise<CredentialAnswers>;
  /** Marks the task taken by this worker; a task that is no longer `todo` gives WorkerError TASK_TAKEN. */
  claim(
    kind: 'learnuplet' | 'preduplet',
    uuid: string,
    workerId: string,
    signal?: AbortSignal,
  ): Promise<void>;
  learnDone(
    uuid: string,
    result: LearnDone,
    usage?: TaskUsage,
    signal?: AbortSignal,
  ): Promise<void>;
  predDone(
    uuid: string,
    predictionUuid: string,
    usage?: TaskUsage,
    signal?: AbortSignal,
  ): Promise<void>;
  /** Sends `{"status":"failed","error":...,"usage":...}` (SPEC.md section 7). */
  reportFailed(
    kind: 'learn' | 'predict',
    uuid: string,
    failure: FailedReport,
    signal?: AbortSignal,
  ): Promise<void>;
  /** Releases connections; safe to call twice. */
  close(): Promise<void>;
}
