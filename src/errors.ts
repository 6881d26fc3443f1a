/**
 * The one error type of the worker. Every failure that reaches a person or the
 * orchestrator is a WorkerError: a message a person understands, what the engine
 * or service said, a hint for the fix, and whether trying again can help.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'TASK_INVALID'
  | 'ENGINE_NOT_FOUND'
  | 'ENGINE_FAILED'
  | 'BUILD_FAILED'
  | 'BUILD_CONTEXT_REJECTED'
  | 'ARCHIVE_REJECTED'
  | 'CONTAINER_FAILED'
  | 'CONTAINER_TIMEOUT'
  | 'CONTAINER_OOM'
  /** Killed by a signal neither the worker nor the container's memory limit sent: not the task's doing. */
  | 'CONTAINER_KILLED'
  | 'PERFORMANCE_INVALID'
  | 'PREDICTION_MISSING'
  | 'STORAGE_FAILED'
  | 'ORCHESTRATOR_FAILED'
  | 'TASK_TAKEN'
  | 'CANCELLED'
  | 'INTERNAL'
  | 'DISK_LIMIT'
  /** What the submission left (predictions, model) is not what the worker accepts: its fault. */
  | 'OUTPUT_INVALID';

export interface WorkerErrorOptions {
  /** True when the same task may succeed if tried again later (a service was down, the engine hiccuped). */
  retryable?: boolean;
  /** What to do about it, in one sentence. */
  hint?: string;
  /** The engine's or service's own words, size-capped by whoever captured them. */
  detail?: string;
  /**
   * The worker's own set-up is wrong (a service refused its credentials): never the task's
   * fault, even where trying again at once cannot help.
   */
  workerFault?: boolean;
  /**
   * The last lines a submission's container printed before it failed (cleaned): its own
   * output, which a failed report may show. Never set for the workflow, which sees the
   * hidden targets.
   */
  submissionOutput?: readonly string[];
  /**
   * Paths in the container's own filesystem that the message names (the image's /tmp): a
   * report keeps them, where it cleans out any other path of a host folder.
   */
  imagePaths?: readonly string[];
  cause?: unknown;
}

export class WorkerError extends Error {
  override readonly name = 'WorkerError';
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly hint?: string;
  readonly detail?: string;
  readonly workerFault: boolean;
  readonly submissionOutput?: readonly string[];
  readonly imagePaths?: readonly string[];

  constructor(code: ErrorCode, message: string, options: WorkerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.hint = options.hint;
    this.detail = options.detail;
    this.workerFault = options.workerFault ?? false;
    if (options.submissionOutput) this.submissionOutput = options.submissionOutput;
    if (options.imagePaths) this.imagePaths = options.imagePaths;
  }

  /** Message, detail and hint as a person reads them on a terminal. */
  describe(): string {
    const parts = [this.message];
    if (this.detail) parts.push(this.detail.trimEnd());
    if (this.hint) parts.push(`hint: ${this.hint}`);
    return parts.join('\n');
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      retryable: this.retryable,
      ...(this.hint ? { hint: this.hint } : {}),
      ...(this.detail ? { detail: this.detail } : {}),
    };
  }
}

/** Wraps anything thrown into a WorkerError, keeping WorkerErrors as they are. */
export function toWorkerError(error: unknown, code: ErrorCode = 'INTERNAL'): WorkerError {
  if (error instanceof WorkerError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new WorkerError(code, message, { cause: error });
}

export function isAbortError(error: unknown): boolean {
  return (
    error instanceof Error &&
    (error.name === 'AbortError' || (error as { code?: string }).code === 'ABORT_ERR')
  );
}
