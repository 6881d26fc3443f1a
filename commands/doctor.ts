import { Flags } from '@oclif/core';
import { BaseCommand, EXIT } from '../src/cli/base-command.js';
import { doctorOptions } from '../src/cli/doctor-options.js';
import { runFlags, taskFlags } from '../src/cli/flags.js';
import { describeCheck } from '../src/doctor/check.js';
import { runDoctor, verdict } from '../src/doctor/doctor.js';

export default class Doctor extends BaseCommand {
  static override summary = 'Check that this host can run tasks safely.';
  static override description =
    `Detects the container engine, builds a probe image without network and runs it with the
limits tasks get, checking from inside that it has no network but loopback, no capabilities,
a read-only root and a non-root user; with --learn-gpus or --predict-gpus, checks the GPU
chain (nvidia-smi, the pool, the CDI spec, the NVIDIA Container Toolkit's version, a
hardened container given one GPU and one given none); then the free space of the engine's
storage and the temp folder (against --disk-limit and --min-free-disk), storage, the
orchestrator and NSQ (that
nsqd's --max-msg-timeout lets a task stay in flight as long as it may run). Takes the same
flags as run. Exit code 1 when the host cannot run tasks.`;
  static override examples = [
    '<%= config.bin %> doctor',
    '<%= config.bin %> doctor --oci-runtime runc --nsqlookupd-urls 127.0.0.1:4161 --json',
  ];
  static override flags = {
    json: Flags.boolean({ description: 'Print the checks as one JSON object.', default: false }),
    // Every flag of run, so one environment file or command line serves both.
    ...runFlags,
    ...taskFlags,
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Doctor);
    const options = await doctorOptions(flags);
    const checks = await runDoctor(options).finally(() =>
      Promise.all([options.storage.close(), options.orchestratorClient?.close()]),
    );
    const { ready, summary } = verdict(checks);
    this.result({ ready, summary, checks }, `${checks.map(describeCheck).join('')}\n${summary}\n`);
    if (!ready) this.exit(EXIT.failed);
  }
}
