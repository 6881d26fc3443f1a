import { Command } from '@oclif/core';
import { toWorkerError, WorkerError } from '../errors.js';

/**
 * Owns error output for every command: one WorkerError, printed with its detail and
 * hint, and an exit code a script can test (2 for a bad command line or input).
 */
export abstract class BaseCommand extends Command {
  protected override async catch(error: Error & { exitCode?: number; oclif?: { exit?: number } }) {
    // oclif's own exits (--help, --version, parse errors) keep their behaviour.
    if (!(error instanceof WorkerError) && (error.oclif || error.exitCode !== undefined)) {
      return super.catch(error);
    }
    const failure = toWorkerError(error);
    process.stderr.write(`Error: ${failure.describe()}\n`);
    this.exit(exitCodeOf(failure));
  }
}

/** Exit codes a script can test; `task exec` uses all of them. */
export const EXIT = {
  /** The task failed by its own fault (or, for other commands, anything else went wrong). */
  failed: 1,
  /** A bad command line, configuration or task file. */
  usage: 2,
  /** The worker or its host could not run the task; the task was not reported failed. */
  workerFault: 3,
} as const;

/** 2 for a bad command line or input, 1 for anything else that went wrong. */
export function exitCodeOf(error: WorkerError): number {
  return error.code === 'CONFIG_INVALID' || error.code === 'TASK_INVALID'
    ? EXIT.usage
    : EXIT.failed;
}
