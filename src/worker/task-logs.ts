import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatSize } from '../config/size.js';
import { STEP_ORDER, type StepName, type TaskKind } from '../tasks/context.js';

/**
 * Each task's whole step output, kept in the state folder so an operator can hand it over
 * (`compute-worker task logs UUID`): <state-dir>/task-logs/<task uuid>/attempt-<n>/<step>.log,
 * the lines as cleaned as the containers' and builds' lines always are (no control
 * characters), and an attempt.json saying when and how the attempt ended. This holds the
 * workflow's output too, which sees the hidden targets: it is the operator's own record and
 * never leaves the worker.
 */

export const TASK_LOGS_DIR = 'task-logs';
const ATTEMPT_FILE = 'attempt.json';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface TaskLogSettings {
  /** Most bytes kept of one attempt's output, all steps together (--task-log-size); 0 keeps none. */
  maxBytes: number;
  /** How long an attempt's output is kept after it was last written (--task-log-retention). */
  retentionMs: number;
}

export interface AttemptFacts {
  uuid: string;
  kind: TaskKind;
  attempt: number;
  startedAt: string;
  endedAt?: string;
  /** How the attempt's message ended (done, failed, requeued, ...). */
  outcome?: string;
  /** What was left out past --task-log-size. */
  truncated?: { lines: number; bytes: number };
}

export function taskLogsDir(stateDir: string): string {
  return join(stateDir, TASK_LOGS_DIR);
}

/** Writes one attempt's output, line by line, up to its cap. */
export class TaskLogWriter {
  private bytes = 0;
  private dropped = { lines: 0, bytes: 0 };
  private current?: { step: StepName; stream: WriteStream };
  private ending: Promise<void>[] = [];
  private closed = false;

  private constructor(
    private readonly dir: string,
    private readonly facts: AttemptFacts,
    private readonly maxBytes: number,
  ) {}

  /** Opens the folder of this attempt (a redelivery numbered the same appends to it). */
  static async open(
    stateDir: string,
    task: { uuid: string; kind: TaskKind; attempt: number },
    maxBytes: number,
  ): Promise<TaskLogWriter> {
    if (!UUID.test(task.uuid)) throw new Error(`not a task uuid: ${task.uuid}`);
    const dir = join(taskLogsDir(stateDir), task.uuid.toLowerCase(), `attempt-${task.attempt}`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const writer = new TaskLogWriter(
      dir,
      { ...task, startedAt: new Date().toISOString() },
      maxBytes,
    );
    await writer.saveFacts();
    return writer;
  }

  /** One line of a step's output (already cleaned by the engine's line splitter). */
  line(step: StepName, line: string): void {
    if (this.closed) return;
    const size = Buffer.byteLength(line) + 1;
    // Once a line did not fit, none after it is kept: what is kept is the output's start, whole.
    if (this.dropped.lines > 0 || this.bytes + size > this.maxBytes) {
      if (this.dropped.lines === 0) {
        this.streamOf(step).write(
          `[compute-worker: output past --task-log-size ${formatSize(this.maxBytes)} is not kept]\n`,
        );
      }
      this.dropped.lines++;
      this.dropped.bytes += size;
      return;
    }
    this.bytes += size;
    this.streamOf(step).write(`${line}\n`);
  }

  /** Ends the attempt: its files are complete, and attempt.json says how it ended. */
  async close(outcome: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.endStream();
    await Promise.all(this.ending);
    this.facts.endedAt = new Date().toISOString();
    this.facts.outcome = outcome;
    if (this.dropped.lines > 0) this.facts.truncated = { ...this.dropped };
    await this.saveFacts();
  }

  private streamOf(step: StepName): WriteStream {
    if (this.current?.step === step) return this.current.stream;
    // Steps run one after another: the previous step's file is done.
    this.ending.push(this.endStream());
    const stream = createWriteStream(join(this.dir, `${step}.log`), { flags: 'a', mode: 0o600 });
    // A full disk must not crash the worker: the output is the operator's copy, not the task.
    stream.on('error', () => {});
    this.current = { step, stream };
    return stream;
  }

  private endStream(): Promise<void> {
    const current = this.current;
    this.current = undefined;
    if (!current) return Promise.resolve();
    return new Promise((resolve) => current.stream.end(resolve));
  }

  private saveFacts(): Promise<void> {
    return writeFile(join(this.dir, ATTEMPT_FILE), `${JSON.stringify(this.facts)}\n`, {
      mode: 0o600,
    });
  }
}

export interface AttemptLog extends AttemptFacts {
  /** Each step's lines, in SPEC order. */
  steps: Partial<Record<StepName, string[]>>;
}

/** The kept output of a task, its attempts in order; an empty list when none is kept. */
export async function readTaskLogs(
  stateDir: string,
  uuid: string,
  only: { step?: StepName; attempt?: number } = {},
): Promise<AttemptLog[]> {
  if (!UUID.test(uuid)) throw new Error(`not a task uuid: ${uuid}`);
  const taskDir = join(taskLogsDir(stateDir), uuid.toLowerCase());
  const attempts = (await readdir(taskDir).catch(() => [] as string[]))
    .map((name) => ({ name, n: Number(/^attempt-(\d+)$/.exec(name)?.[1]) }))
    .filter((a) => Number.isInteger(a.n) && (only.attempt === undefined || a.n === only.attempt))
    .sort((a, b) => a.n - b.n);
  const logs: AttemptLog[] = [];
  for (const { name, n } of attempts) {
    const dir = join(taskDir, name);
    const facts = await readFile(join(dir, ATTEMPT_FILE), 'utf8')
      .then((text) => JSON.parse(text) as AttemptFacts)
      .catch(() => ({ uuid, kind: 'learn' as const, attempt: n, startedAt: '' }));
    const steps: AttemptLog['steps'] = {};
    for (const step of STEP_ORDER) {
      if (only.step && step !== only.step) continue;
      const text = await readFile(join(dir, `${step}.log`), 'utf8').catch(() => undefined);
      if (text !== undefined) steps[step] = text.replace(/\n$/, '').split('\n');
    }
    logs.push({ ...facts, steps });
  }
  return logs;
}

/**
 * Removes the attempts last written more than `retentionMs` ago, and the task folders they
 * leave empty. Returns the task uuids whose output went. Never throws: pruning is housekeeping.
 */
export async function pruneTaskLogs(
  stateDir: string,
  retentionMs: number,
  now = Date.now(),
): Promise<string[]> {
  const root = taskLogsDir(stateDir);
  const pruned: string[] = [];
  for (const uuid of await readdir(root).catch(() => [] as string[])) {
    const taskDir = join(root, uuid);
    const attempts = await readdir(taskDir).catch(() => [] as string[]);
    let left = attempts.length;
    for (const attempt of attempts) {
      const dir = join(taskDir, attempt);
      if (now - (await lastWritten(dir)) <= retentionMs) continue;
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      left--;
    }
    if (left > 0) continue;
    await rm(taskDir, { recursive: true, force: true }).catch(() => undefined);
    pruned.push(uuid);
  }
  return pruned;
}

/** When anything in an attempt's folder was last written (ms since the epoch). */
async function lastWritten(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const times = await Promise.all(
    [dir, ...names.map((name) => join(dir, name))].map((path) =>
      stat(path).then(
        (s) => s.mtimeMs,
        () => 0,
      ),
    ),
  );
  return Math.max(0, ...times);
}

/** The kept output as a person reads it: a heading per attempt and per step, then its lines. */
export function describeTaskLogs(logs: readonly AttemptLog[]): string {
  const out: string[] = [];
  for (const log of logs) {
    const ended = log.outcome ? `, ${log.outcome} at ${log.endedAt}` : ', not ended';
    out.push(
      `== ${log.kind} task ${log.uuid}, attempt ${log.attempt}: started ${log.startedAt}${ended}`,
    );
    if (log.truncated) {
      out.push(
        `== ${log.truncated.lines} lines (${formatSize(log.truncated.bytes)}) past --task-log-size were left out`,
      );
    }
    for (const [step, lines] of Object.entries(log.steps)) {
      out.push(`-- ${step}`);
      out.push(...lines);
    }
  }
  return `${out.join('\n')}\n`;
}
