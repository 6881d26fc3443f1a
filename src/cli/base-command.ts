import { Command, Errors, type Interfaces } from '@oclif/core';
import { toWorkerError, WorkerError } from '../errors.js';
import { faultOf } from '../tasks/outcome.js';
import { closestName } from './did-you-mean.js';
import { withEnvLists } from './env-lists.js';

type Values = { [name: string]: unknown };

/**
 * Owns the output of every command: with --json, stdout holds one JSON object (the
 * result, or the error) and progress goes to stderr; an error is one WorkerError,
 * printed with its detail and hint, and an exit code a script can test (2 for a bad
 * command line or input).
 */
export abstract class BaseCommand extends Command {
  private jsonFlag: boolean | undefined;

  protected override async parse<F extends Values, B extends Values, A extends Values>(
    options?: Interfaces.Input<F, B, A>,
    argv?: string[],
  ): Promise<Interfaces.ParserOutput<F, B, A>> {
    const flags = (options?.flags ?? {}) as Parameters<typeof withEnvLists>[0];
    const parsed = await super.parse(options, withEnvLists(flags, argv ?? this.argv, process.env));
    this.jsonFlag = (parsed.flags as { json?: unknown }).json === true;
    return parsed;
  }

  /** --json was given; when the command line could not be parsed, as it is written. */
  protected get json(): boolean {
    if (this.jsonFlag !== undefined) return this.jsonFlag;
    if (!('json' in (this.ctor.flags ?? {}))) return false;
    const end = this.argv.indexOf('--');
    return (end === -1 ? this.argv : this.argv.slice(0, end)).includes('--json');
  }

  /** Progress a person follows: on stderr with --json, so stdout holds only the result. */
  protected progress(text: string): void {
    (this.json ? process.stderr : process.stdout).write(text);
  }

  /** The command's result: one line of JSON with --json, else the text. */
  protected result(json: Record<string, unknown>, text: string): void {
    process.stdout.write(this.json ? `${JSON.stringify(json)}\n` : text);
  }

  protected override async catch(error: Error & { exitCode?: number; oclif?: { exit?: number } }) {
    // An exit the command chose (this.exit), --help and --version keep oclif's behaviour.
    if (error instanceof Errors.ExitError) return super.catch(error);
    // oclif answers a mistyped flag with the whole help: the flag, a guess and where the
    // help is say more.
    const unknown = (error as { flags?: unknown }).flags;
    if (Array.isArray(unknown) && unknown.length > 0) error = this.unknownFlag(unknown);
    const ownError = error instanceof WorkerError || !(error.oclif || error.exitCode !== undefined);
    if (!ownError && !this.json) return super.catch(error);
    // oclif's own errors (a bad command line) keep their exit code.
    const failure = ownError ? toWorkerError(error) : toWorkerError(error, 'CONFIG_INVALID');
    const code = ownError
      ? exitCodeOf(failure)
      : (error.oclif?.exit ?? error.exitCode ?? EXIT.failed);
    if (this.json) process.stdout.write(`${JSON.stringify(errorJson(failure))}\n`);
    process.stderr.write(`Error: ${failure.describe()}\n`);
    this.exit(code);
  }

  private unknownFlag(flags: unknown[]): WorkerError {
    const names = Object.keys(this.ctor.flags ?? {});
    const typed = flags.map(String);
    const guesses = typed.flatMap((flag) => {
      const guess = closestName(flag, names);
      if (!guess) return [];
      return [typed.length > 1 ? `${flag}: did you mean --${guess}?` : `did you mean --${guess}?`];
    });
    const command = [this.config.bin, ...(this.id ? this.id.split(':') : [])].join(' ');
    return new WorkerError(
      'CONFIG_INVALID',
      `unknown flag${typed.length > 1 ? 's' : ''} ${typed.join(', ')}`,
      {
        hint: [...guesses, `every flag: ${command} --help`].join(' '),
      },
    );
  }
}

/**
 * What every command prints on stdout under --json when it stops on an error: "status"
 * is "invalid" for a task file that is not a valid task, else "error"; "fault" says
 * whose fault it is ("task" or "worker"); "error" is the error's code, message, whether
 * retrying may help, and its hint and detail.
 */
export function errorJson(error: WorkerError): Record<string, unknown> {
  return {
    status: error.code === 'TASK_INVALID' ? 'invalid' : 'error',
    fault: faultOf(error),
    error: error.toJSON(),
  };
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
