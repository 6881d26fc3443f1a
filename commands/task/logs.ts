import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../src/cli/base-command.js';
import { serviceFlagSet } from '../../src/cli/flags.js';
import { defaultStateDir } from '../../src/config/paths.js';
import { WorkerError } from '../../src/errors.js';
import { STEP_ORDER } from '../../src/tasks/context.js';
import { describeTaskLogs, readTaskLogs } from '../../src/worker/task-logs.js';

export default class TaskLogs extends BaseCommand {
  static override summary = 'Print the step output a worker kept of a task.';
  static override description = [
    "Prints what each step of the task printed (its containers' and builds' output, control characters made visible), attempt by attempt, as the daemon kept it in its state folder (--task-log-size, for --task-log-retention). It includes the workflow's output, which sees the hidden targets: it is the operator's, and never sent to the orchestrator.",
  ].join('\n\n');
  static override examples = [
    '<%= config.bin %> task logs 1b4e28ba-2fa1-11d2-883f-0016d3cca427',
    '<%= config.bin %> task logs 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --step train --attempt 2',
    '<%= config.bin %> task logs 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --state-dir /var/lib/compute-worker --json',
  ];
  static override args = {
    uuid: Args.string({ description: 'The task uuid.', required: true }),
  };
  static override flags = {
    step: Flags.option({ options: STEP_ORDER, description: 'Only this step.' })(),
    attempt: Flags.integer({ description: 'Only this attempt (NSQ delivery).', min: 1 }),
    json: Flags.boolean({ description: 'Print the attempts as one JSON object.', default: false }),
    'state-dir': serviceFlagSet['state-dir'],
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(TaskLogs);
    const stateDir = flags['state-dir'] ?? defaultStateDir();
    if (!/^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/i.test(args.uuid))
      throw new WorkerError('CONFIG_INVALID', `"${args.uuid}" is not a task uuid`);
    const attempts = await readTaskLogs(stateDir, args.uuid, flags);
    if (attempts.length === 0) {
      throw new WorkerError(
        'CONFIG_INVALID',
        `no output of task ${args.uuid} is kept in ${stateDir}`,
        {
          hint: 'the daemon keeps it for --task-log-retention (default 7d) in its --state-dir',
        },
      );
    }
    this.result({ uuid: args.uuid, attempts }, describeTaskLogs(attempts));
  }
}
