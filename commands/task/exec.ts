import { Args, Flags } from '@oclif/core';
import { BaseCommand, exitCodeOf } from '../../src/cli/base-command.js';
import { taskFlags } from '../../src/cli/flags.js';
import { describeReport, progressPrinter, reportJson } from '../../src/cli/progress.js';
import { buildTaskEnv } from '../../src/cli/settings.js';
import { readTaskFile } from '../../src/cli/task-input.js';
import { toWorkerError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { executeTask, type ParsedTask, reportFailure } from '../../src/tasks/run-task.js';

export default class TaskExec extends BaseCommand {
  static override summary = 'Run one learn or predict task now, without NSQ.';
  static override description =
    `Reads a task JSON (the message body the worker gets from NSQ) and runs it: builds the
workflow and submission images, stages the data, runs the containers, uploads the model or
the prediction and reports to the orchestrator. A failed task is reported failed. With blank
--storage-host and --orchestrator-host, the built-in local storage folder and orchestrator
ledger are used. Exit code 0 only when the task is done.`;
  static override examples = [
    '<%= config.bin %> task exec learn.json',
    'cat predict.json | <%= config.bin %> task exec - --json',
    '<%= config.bin %> task exec task.json --storage-host https://storage.example --storage-port 443 --storage-password-file /run/secrets/storage',
  ];
  static override args = {
    file: Args.string({ description: 'Task JSON file, or - for standard input.', required: true }),
  };
  static override flags = {
    type: Flags.option({
      options: ['learn', 'predict'] as const,
      description: 'Task type. Default: told apart by its fields.',
    })(),
    json: Flags.boolean({
      description: 'Print one result object on stdout; progress and logs go to stderr.',
      default: false,
    }),
    ...taskFlags,
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(TaskExec);
    let parsed: ParsedTask;
    let env: Awaited<ReturnType<typeof buildTaskEnv>>;
    try {
      parsed = await readTaskFile(args.file, flags.type);
      env = await buildTaskEnv(flags);
    } catch (error) {
      // A --json caller gets its one object even when the task never started.
      if (!flags.json) throw error;
      const failure = toWorkerError(error);
      const status = failure.code === 'TASK_INVALID' ? 'invalid' : 'error';
      process.stdout.write(`${JSON.stringify({ status, error: failure.toJSON() })}\n`);
      process.stderr.write(`Error: ${failure.describe()}\n`);
      this.exit(exitCodeOf(failure));
    }
    const log = createLogger({ level: 'warn' });
    const controller = new AbortController();
    const cancel = () => controller.abort(new Error('interrupted by a signal'));
    process.once('SIGINT', cancel);
    process.once('SIGTERM', cancel);

    const out = (text: string) => (flags.json ? process.stderr : process.stdout).write(text);
    const report = await executeTask(
      env,
      { signal: controller.signal, onEvent: progressPrinter(out) },
      parsed,
      log,
    );
    const reportError = report.status === 'failed' ? await reportFailure(env, report) : undefined;
    await Promise.all([env.storage.close(), env.orchestrator.close(), env.release()]);

    if (flags.json) {
      const extra = reportError ? { reportError: reportError.toJSON() } : {};
      process.stdout.write(`${JSON.stringify(reportJson(report, extra))}\n`);
    } else {
      process.stdout.write(describeReport(report));
      if (reportError)
        process.stderr.write(`could not report the failure: ${reportError.describe()}\n`);
    }
    if (report.status !== 'done') this.exit(1);
  }
}
