import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { workerVersion } from '../config/worker-version.js';
import { WorkerError } from '../errors.js';
import { Journal, type JournalEntry } from './journal.js';
import type { ListenAddress } from './metrics-server.js';

/** One task in progress, as `GET /status` and `compute-worker status` show it. */
export interface TaskStatus {
  uuid: string;
  kind: 'learn' | 'predict';
  /** The step running now; "claim" before the first one. */
  step: string;
  elapsed_s: number;
  attempt: number;
  gpus?: string[];
}

/** What a worker is doing now. */
export interface WorkerStatus {
  worker: {
    id?: string;
    version: string;
    /** Absent where it is not known (read from the state folder, the daemon not asked). */
    draining?: boolean;
    taking_tasks?: boolean;
    /** What keeps it from taking a new task, of one kind (a kind's slots all busy) or at all. */
    not_taking?: string[];
  };
  tasks: TaskStatus[];
  /** Where this came from: the daemon's /status, or the journal in the state folder. */
  source: 'daemon' | 'state folder';
}

export function taskStatuses(entries: JournalEntry[], now = Date.now()): TaskStatus[] {
  return entries
    .map((e) => ({
      uuid: e.taskUuid,
      kind: e.kind,
      step: e.step ?? 'claim',
      elapsed_s: Math.max(0, Math.round((now - Date.parse(e.startedAt)) / 1000)),
      attempt: e.attempts,
      ...(e.gpus?.length ? { gpus: e.gpus } : {}),
    }))
    .sort((a, b) => b.elapsed_s - a.elapsed_s);
}

/**
 * What the daemon says of itself: `taking` when it would take a new task of some kind
 * now; `why` lists what keeps it from taking one (of a kind, or at all).
 */
export function daemonStatus(
  id: string,
  draining: boolean,
  taking: boolean,
  why: string[],
  entries: JournalEntry[],
): WorkerStatus {
  return {
    worker: {
      id,
      version: workerVersion(),
      draining,
      taking_tasks: taking,
      ...(why.length ? { not_taking: why } : {}),
    },
    tasks: taskStatuses(entries),
    source: 'daemon',
  };
}

/**
 * Without a daemon to ask: the journal of the state folder, which a running daemon keeps
 * (one entry per task, rewritten at every step) and a stopped one leaves as it was.
 */
export async function statusFromStateDir(stateDir: string): Promise<WorkerStatus> {
  const id = await readFile(join(stateDir, 'worker-id'), 'utf8').then(
    (text) => text.trim(),
    () => undefined,
  );
  const entries = await new Journal(stateDir).list();
  return {
    worker: { ...(id ? { id } : {}), version: workerVersion() },
    tasks: taskStatuses(entries),
    source: 'state folder',
  };
}

/** Asks a daemon's metrics address for its /status. */
export async function fetchStatus(at: ListenAddress): Promise<WorkerStatus> {
  const host = at.host.includes(':') ? `[${at.host}]` : at.host;
  const url = `http://${host}:${at.port}/status`;
  try {
    const response = await request(url, { headersTimeout: 10_000, bodyTimeout: 10_000 });
    const text = await response.body.text();
    if (response.statusCode !== 200) throw new Error(`answered ${response.statusCode}: ${text}`);
    return JSON.parse(text) as WorkerStatus;
  } catch (error) {
    throw new WorkerError('CONFIG_INVALID', `cannot read the worker's status at ${url}`, {
      detail: (error as Error).message,
      hint: 'is `compute-worker run` running with this --metrics-address?',
      cause: error,
    });
  }
}

/** The status as a person reads it on a terminal. */
export function describeStatus(status: WorkerStatus): string {
  const w = status.worker;
  const lines = [
    `worker ${w.id ?? '(no id yet)'}, version ${w.version} (from the ${status.source})`,
  ];
  if (w.draining !== undefined) {
    const why = w.not_taking?.length ? ` (${w.not_taking.join('; ')})` : '';
    lines.push(`${w.taking_tasks ? 'taking tasks' : 'not taking tasks'}${why}`);
  }
  if (status.tasks.length === 0) lines.push('no task running');
  for (const t of status.tasks) {
    const gpus = t.gpus ? `, GPUs ${t.gpus.join(' ')}` : '';
    lines.push(`${t.kind} ${t.uuid}: ${t.step}, ${t.elapsed_s}s, attempt ${t.attempt}${gpus}`);
  }
  return `${lines.join('\n')}\n`;
}
