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

/** 2 for a bad command line or input, 1 for anything else that went wrong. */
export function exitCodeOf(error: WorkerError): number {
  return error.code === 'CONFIG_INVALID' || error.code === 'TASK_INVALID' ? 2 : 1;
}
