import { Flags } from '@oclif/core';
import { BaseCommand } from '../src/cli/base-command.js';
import { runFlags, serviceFlagSet } from '../src/cli/flags.js';
import { defaultStateDir } from '../src/config/paths.js';
import { parseListenAddress } from '../src/worker/metrics-server.js';
import { describeStatus, fetchStatus, statusFromStateDir } from '../src/worker/status.js';

export default class Status extends BaseCommand {
  static override summary = 'Show what a worker is doing now.';
  static override description = [
    "With --metrics-address, asks the running daemon (GET /status): its id and version, whether it is draining and taking tasks (and why not), and each running task's uuid, kind, step, time so far, attempt and GPUs.",
    'Without it, reads the journal in the state folder: the tasks a running daemon has in progress there, or those a stopped one left.',
  ].join('\n\n');
  static override examples = [
    '<%= config.bin %> status --metrics-address 127.0.0.1:9100',
    '<%= config.bin %> status --state-dir /var/lib/compute-worker --json',
  ];
  static override flags = {
    json: Flags.boolean({ description: 'Print the status as one JSON object.', default: false }),
    'metrics-address': runFlags['metrics-address'],
    'state-dir': serviceFlagSet['state-dir'],
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Status);
    const address = flags['metrics-address'];
    const status = address
      ? await fetchStatus(parseListenAddress(address))
      : await statusFromStateDir(flags['state-dir'] ?? defaultStateDir());
    this.result(status as unknown as Record<string, unknown>, describeStatus(status));
  }
}
