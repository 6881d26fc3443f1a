import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Flags } from '@oclif/core';
import { BaseCommand } from '../src/cli/base-command.js';
import { runFlags, taskFlags } from '../src/cli/flags.js';
import {
  diskLimits,
  engineOptions,
  ledgerFile,
  prepareStateDir,
  runLimits,
  storageFromFlags,
  workerId,
} from '../src/cli/settings.js';
import type { Check } from '../src/doctor/check.js';
import { runDoctor, verdict } from '../src/doctor/doctor.js';
import { parseGpuSelection } from '../src/gpu/pool.js';

const MARK = { pass: 'ok  ', warn: 'warn', fail: 'FAIL', skip: 'skip' } as const;

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
    'nsqlookupd-urls': runFlags['nsqlookupd-urls'],
    'nsqd-tcp-addresses': runFlags['nsqd-tcp-addresses'],
    'learn-parallelism': runFlags['learn-parallelism'],
    'predict-parallelism': runFlags['predict-parallelism'],
    ...taskFlags,
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Doctor);
    const stateDir = await prepareStateDir(flags);
    const storage = await storageFromFlags(flags, stateDir);
    const limits = runLimits(flags);
    const disk = diskLimits(flags);
    const checks = await runDoctor({
      engine: engineOptions(flags),
      limits,
      storage,
      orchestrator: flags['orchestrator-host']
        ? { host: flags['orchestrator-host'], port: flags['orchestrator-port'] }
        : { ledgerFile: ledgerFile(flags, stateDir) },
      nsq: {
        lookupdUrls: flags['nsqlookupd-urls'] ?? [],
        nsqdAddresses: flags['nsqd-tcp-addresses'] ?? [],
        learnTimeoutMs: flags['learn-timeout'],
        predictTimeoutMs: flags['predict-timeout'],
      },
      gpu: {
        learnGpus: flags['learn-gpus'],
        predictGpus: flags['predict-gpus'],
        learnParallelism: flags['learn-parallelism'],
        predictParallelism: flags['predict-parallelism'],
        selection: parseGpuSelection(flags.gpus ?? 'all'),
        cdiKind: flags['gpu-cdi-kind'],
        limits,
      },
      disk: {
        limitBytes: disk.diskLimitBytes,
        minFreeBytes: disk.minFreeDiskBytes,
        tmpDir: tmpdir(),
      },
      imageCache: {
        workerId: await workerId(stateDir),
        maxBytes: flags['image-cache-size'],
        file: join(stateDir, 'image-cache.json'),
      },
    });
    await storage.close();
    const result = verdict(checks);
    if (flags.json) {
      process.stdout.write(
        `${JSON.stringify({ ready: result.ready, summary: result.summary, checks })}\n`,
      );
    } else {
      process.stdout.write(checks.map(describe).join(''));
      process.stdout.write(`\n${result.summary}\n`);
    }
    if (!result.ready) this.exit(1);
  }
}

function describe(check: Check): string {
  let text = `[${MARK[check.status]}] ${check.name}: ${check.message}\n`;
  if (check.hint) text += `       hint: ${check.hint}\n`;
  if (check.detail) text += `${check.detail.replace(/^/gm, '       | ')}\n`;
  return text;
}
