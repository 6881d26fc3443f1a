import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { WorkerError } from '../errors.js';
import { failedBody } from './orchestrator.js';
import type { FailedReport, LearnDone, OrchestratorClient, TaskUsage } from './types.js';

/** One line of the ledger: what an orchestrator would have been told. */
export interface LedgerEntry {
  time: string;
  call: string;
  body: Record<string, unknown>;
  reason?: string;
}

const DONE_ROUTE = { learn: 'learndone', predict: 'preddone' } as const;

/**
 * The built-in orchestrator used when no orchestrator host is given: every report is
 * appended to a JSON-lines ledger file, one line per call, so a person can read what
 * happened (`tail -f`, `jq`).
 */
export class LocalOrchestratorClient implements OrchestratorClient {
  readonly file: string;
  readonly description: string;

  constructor(ledgerFile: string) {
    this.file = resolve(ledgerFile);
    this.description = `local orchestrator ledger ${this.file}`;
  }

  /** Records the claim; refuses a task the ledger already shows done, as the orchestrator would. */
  async claim(kind: 'learnuplet' | 'preduplet', uuid: string, workerId: string): Promise<void> {
    const doneCall = `/${kind === 'learnuplet' ? 'learndone' : 'preddone'}/${uuid}`;
    const entries = await this.entries();
    if (entries.some((e) => e.call === doneCall && e.body.status === 'done')) {
      throw new WorkerError(
        'TASK_TAKEN',
        `${kind} ${uuid} is done already, says ${this.description}`,
        {
          hint: 'give the task a new uuid, or remove its lines from the ledger to run it again',
        },
      );
    }
    await this.append(`/worker/${kind}/${uuid}`, { worker: workerId });
  }

  async learnDone(uuid: string, result: LearnDone, usage?: TaskUsage): Promise<void> {
    await this.append(`/learndone/${uuid}`, {
      status: 'done',
      perf: result.perf,
      train_perf: result.train_perf,
      test_perf: result.test_perf,
      ...(usage ? { usage } : {}),
    });
  }

  async predDone(uuid: string, predictionUuid: string, usage?: TaskUsage): Promise<void> {
    await this.append(`/preddone/${uuid}`, {
      status: 'done',
      prediction_storage_uuid: predictionUuid,
      ...(usage ? { usage } : {}),
    });
  }

  /** The same body an orchestrator gets; `reason` repeats its message for a quick `jq .reason`. */
  async reportFailed(
    kind: 'learn' | 'predict',
    uuid: string,
    failure: FailedReport,
  ): Promise<void> {
    await this.append(`/${DONE_ROUTE[kind]}/${uuid}`, failedBody(failure), failure.error.message);
  }

  /** Every line of the ledger; lines a person broke by hand are skipped. */
  async entries(): Promise<LedgerEntry[]> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw this.ledgerError('read', error);
    }
    const entries: LedgerEntry[] = [];
    for (const line of text.split('\n')) {
      try {
        const entry = JSON.parse(line) as LedgerEntry;
        if (typeof entry?.call === 'string' && typeof entry.body === 'object' && entry.body) {
          entries.push(entry);
        }
      } catch {
        // not a ledger line
      }
    }
    return entries;
  }

  async close(): Promise<void> {}

  private async append(call: string, body: Record<string, unknown>, reason?: string) {
    const entry: LedgerEntry = { time: new Date().toISOString(), call, body };
    if (reason !== undefined) entry.reason = reason;
    try {
      await mkdir(dirname(this.file), { recursive: true });
      // One write per line, in append mode: lines of concurrent tasks do not interleave.
      await appendFile(this.file, `${JSON.stringify(entry)}\n`);
    } catch (error) {
      throw this.ledgerError('write', error);
    }
  }

  private ledgerError(verb: string, error: unknown): WorkerError {
    return new WorkerError('ORCHESTRATOR_FAILED', `cannot ${verb} the ledger ${this.file}`, {
      detail: (error as Error).message,
      hint: 'pass --orchestrator-ledger with a file this user can write',
      cause: error,
    });
  }
}
