import { hostname } from 'node:os';
import type { FailedReport, StepUsage, TaskUsage } from '../clients/types.js';
import type { WorkerError } from '../errors.js';
import type { StepName, TaskEnv } from './context.js';
import type { Fault } from './outcome.js';

/** SPEC.md section 7: a failed report's log_tail holds at most this much. */
export const REPORT_TAIL_LINES = 50;
export const REPORT_TAIL_BYTES = 8 * 1024;

/**
 * Absolute paths of the host's own folders. Messages name container paths too
 * (/data/model, /hidden_data/perf/performance.json): those stay, the host's go.
 */
const HOST_PATH =
  /(?<![\w.~-])\/(?:tmp|var|run|home|root|etc|proc|sys|usr|opt|srv|mnt|media|boot|nix|snap|lib|lib64|bin|sbin)(?:\/[^\s'"`,;()[\]{}<>]*)?/g;

/** What the worker tells the orchestrator (or its ledger) about a task that failed. */
export function failedReport(
  env: TaskEnv,
  failure: {
    error: WorkerError;
    fault: Fault;
    /** The message: the error's own, or why the worker gave up on it. */
    reason: string;
    step?: StepName;
    attempts: number;
    usage?: Record<string, StepUsage>;
  },
): FailedReport {
  const tail = failure.fault === 'task' ? reportTail(failure.error.submissionOutput) : undefined;
  return {
    error: {
      code: failure.error.code,
      ...(failure.step ? { step: failure.step } : {}),
      fault: failure.fault,
      message: scrub(env, failure.reason, failure.error.imagePaths),
      // Another run (later, or on another worker) may succeed only where the worker failed.
      retryable: failure.fault === 'worker',
      attempts: failure.attempts,
      ...(tail?.length ? { log_tail: tail.map((line) => scrub(env, line)) } : {}),
    },
    ...(failure.usage ? { usage: taskUsage(env, failure.usage) } : {}),
  };
}

/** The `usage` of a report: the worker, this host, and the container steps that ran. */
export function taskUsage(env: TaskEnv, steps: Record<string, StepUsage>): TaskUsage {
  return { worker: env.workerId, host: hostname(), steps };
}

/** The last lines of the output, at most REPORT_TAIL_LINES lines and REPORT_TAIL_BYTES bytes. */
export function reportTail(lines: readonly string[] | undefined): string[] | undefined {
  if (!lines) return undefined;
  const kept: string[] = [];
  let bytes = 0;
  for (let i = lines.length - 1; i >= 0 && kept.length < REPORT_TAIL_LINES; i--) {
    const line = lines[i] as string;
    const size = Buffer.byteLength(line) + 1;
    if (bytes + size > REPORT_TAIL_BYTES) {
      // A line too long for what is left keeps its end, as the engine's tail does.
      if (kept.length === 0) kept.unshift(endOf(line, REPORT_TAIL_BYTES - 1));
      break;
    }
    kept.unshift(line);
    bytes += size;
  }
  // A last empty line is the output's final newline, not a line the submission printed.
  while (kept.length > 0 && kept[kept.length - 1] === '') kept.pop();
  return kept;
}

function endOf(line: string, maxBytes: number): string {
  let end = line.slice(-maxBytes);
  while (Buffer.byteLength(end) > maxBytes) end = end.slice(1);
  return end;
}

/**
 * Removes what no report may carry: this worker's passwords and private folders
 * (env.privateWords) and any absolute path of a host folder, but for the paths of the
 * container's own filesystem that the message names (`imagePaths`).
 */
export function scrub(env: TaskEnv, text: string, imagePaths: readonly string[] = []): string {
  let out = text;
  // Longest first: a state folder inside a longer temp path is replaced whole.
  const words = [...(env.privateWords ?? [])]
    .filter((w) => w.length >= 4)
    .sort((a, b) => b.length - a.length);
  for (const word of words) out = out.split(word).join('<hidden>');
  return out.replace(HOST_PATH, (path) => (imagePaths.includes(path) ? path : '<host path>'));
}
