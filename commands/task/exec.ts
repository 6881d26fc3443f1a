import { Args, Flags } from '@oclif/core';
import { BaseCommand, EXIT } from '../../src/cli/base-command.js';
import { taskFlags } from '../../src/cli/flags.js';
import { describeReport, progressPrinter, reportJson } from '../../src/cli/progress.js';
import { buildTaskEnv } from '../../src/cli/settings.js';
import { readTaskFile } from '../../src/cli/task-input.js';
import { failedBody } from '../../src/clients/orchestrator.js';
import { remoteEngineWarning } from '../../src/engine/remote.js';
import { createLogger } from '../../src/log.js';
import { sweepDataCache } from '../../src/tasks/data-cache.js';
import { acquireTaskGpus, gpuNames } from '../../src/tasks/gpus.js';
import { decideOutcome, ONE_SHOT } from '../../src/tasks/outcome.js';
import { executeTask, failedReportOf, reportFailure } from '../../src/tasks/run-task.js';
import { trimImages } from '../../src/tasks/scope.js';
import { removeDeadExecRuns } from '../../src/worker/dead-runs.js';

export default class TaskExec extends BaseCommand {
  static override summary = 'Run one learn or predict task now, without NSQ.';
  // One line per paragraph: oclif wraps the lines itself and keeps every newline.
  static override description = [
    'Reads a task JSON (the message body the worker gets from NSQ) and runs it: builds the workflow and submission images, stages the data, runs the containers, uploads the model or the prediction and reports to the orchestrator. With blank --storage-host and --orchestrator-host, the built-in local storage folder and orchestrator ledger are used.',
    "A task that fails by its own fault (an invalid task, a failing, timed-out or out-of-memory submission or workflow, a failing build, invalid outputs) is reported failed. A failure that is the worker's or its host's (an internal error, the engine, a service that is down or refuses the worker's credentials, an interrupt) is not: the task is fine, run it again once the host is fixed.",
    'Exit codes: 0 the task is done; 1 it failed by its own fault (reported failed); 2 a bad command line, configuration or task file; 3 the worker or its host could not run it (not reported). With --json, "status" is "done", "failed" (exit 1), "error" (exit 3) or "invalid", and "fault" says whose fault a failure was: "task" or "worker".',
  ].join('\n\n');
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
    const parsed = await readTaskFile(args.file, flags.type);
    const env = await buildTaskEnv(flags);
    const log = createLogger({ level: 'warn' });
    const controller = new AbortController();
    const cancel = () => controller.abort(new Error('interrupted by a signal'));
    process.once('SIGINT', cancel);
    process.once('SIGTERM', cancel);
    // The terminal went away: cancelled and cleaned up as for Ctrl-C, not killed mid-task.
    process.once('SIGHUP', cancel);

    // What an earlier task exec on this state folder left when it was killed.
    await removeDeadExecRuns(env.stateDir, env.engine, log);
    await sweepDataCache(env, log);
    const remote = remoteEngineWarning(env.engine.info);
    if (remote) this.progress(`warning: ${remote}\n`);
    const gpus = acquireTaskGpus(env, parsed.type);
    const names = gpuNames(gpus.gpus);
    if (names) this.progress(`GPUs: ${names.join(', ')}\n`);
    const report = await executeTask(
      env,
      {
        signal: controller.signal,
        onEvent: progressPrinter((text) => this.progress(text)),
        gpus: gpus.gpus,
      },
      parsed,
      log,
    ).finally(() => gpus.release());
    const outcome = decideOutcome(report, 1, ONE_SHOT);
    const failure =
      outcome.action === 'failed' ? failedReportOf(env, report, outcome, 1) : undefined;
    const reportError = failure ? await reportFailure(env, report, failure) : undefined;
    await trimImages(env, log);
    await Promise.all([env.storage.close(), env.orchestrator.close(), env.release()]);

    const json = reportJson(report, {
      ...(outcome.action === 'retry' ? { status: 'error' } : {}),
      ...(outcome.action === 'done' ? {} : { fault: outcome.fault }),
      ...(failure ? { report: failedBody(failure) } : {}),
      ...(reportError ? { reportError: reportError.toJSON() } : {}),
    });
    const notReported =
      outcome.action === 'retry'
        ? `not the task's fault: ${outcome.reason}. It was not reported failed: run it again once the worker or its host is fixed.\n`
        : '';
    this.result(json, describeReport(report) + notReported);
    if (reportError && !this.json)
      process.stderr.write(`could not report the failure: ${reportError.describe()}\n`);
    if (outcome.action === 'retry') this.exit(EXIT.workerFault);
    if (outcome.action === 'failed') this.exit(EXIT.failed);
  }
}
