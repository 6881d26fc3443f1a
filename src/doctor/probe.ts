import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { LABEL_WORKER } from '../engine/labels.js';
import { DEFAULT_LIMITS } from '../engine/limits.js';
import { probeContext } from '../engine/probe-context.js';
import { redactEngineHost, remoteEngineGaps } from '../engine/remote.js';
import type { Engine, RunLimits } from '../engine/types.js';
import type { HeldIdMap, UsernsPool } from '../engine/userns-pool.js';
import { type Check, fail } from './check.js';
import {
  judgeCoreDumps,
  judgeProbe,
  judgeUserns,
  PROBE_INPUT,
  PROBE_SCRIPT,
  parseProbe,
} from './probe-facts.js';

export interface ProbeOptions {
  /** A static busybox for the probe image (Debian: busybox-static). */
  busyboxPath?: string;
  /** The limits tasks will run with; the probe container runs with them too. */
  limits?: RunLimits;
  timeoutMs?: number;
  /** Flags the caller's tasks add to every container (GPU devices): the probe runs as they do. */
  extraArgs?: string[];
  /** The user namespaces the worker's containers get (settings.ts usernsFor); none: not judged. */
  userns?: { userns?: UsernsPool; usernsShared?: string };
}

/**
 * Builds a tiny image (no registry needed) and runs it hardened as a task would run,
 * then checks from inside that the isolation holds. Never throws: every failure is a check.
 */
export async function probeEngine(engine: Engine, options: ProbeOptions = {}): Promise<Check[]> {
  const checks = staticChecks(engine);
  const labels = { [LABEL_WORKER]: `probe-${randomBytes(4).toString('hex')}` };
  try {
    const image = await probeImage(engine, options, labels, checks);
    if (image) checks.push(...(await probeRun(engine, image, options, labels)));
  } finally {
    await engine.removeByLabels(labels).catch(() => undefined);
  }
  return checks;
}

function staticChecks(engine: Engine): Check[] {
  const info = engine.info;
  const checks: Check[] = [
    {
      name: 'engine',
      status: 'pass',
      message: `${info.name} ${info.version} (${info.rootless ? 'rootless' : 'rootful'})${info.engineHost ? ` at ${redactEngineHost(info.engineHost)}` : ''}, OCI runtime ${info.ociRuntime}, cgroup v${info.cgroupVersion}${info.cgroupHybrid ? ' (hybrid)' : ''}, storage ${info.storageDriver}`,
    },
  ];
  const gaps = remoteEngineGaps(info);
  if (gaps.length > 0) {
    checks.push({
      name: 'remote-engine',
      status: 'warn',
      message: `the engine is remote: not enforced here: ${gaps.join('; ')}`,
      hint: "bound the engine host's storage itself (a filesystem or quota of its own for its volumes and images), or run the worker on the engine's host",
    });
  }
  if (info.ociRuntime === 'crun' && info.cgroupHybrid) {
    checks.push({
      name: 'oci-runtime',
      status: 'fail',
      message:
        "crun cannot run containers on this host's hybrid cgroups (cgroup v1 plus a v2 unified tree)",
      hint: 'install runc and pass --oci-runtime runc (or COMPUTE_WORKER_OCI_RUNTIME=runc)',
    });
  }
  const unenforced = info.unenforcedLimits ?? [];
  checks.push(
    unenforced.length === 0
      ? {
          name: 'resource-limits',
          status: 'pass',
          message: 'memory, CPU and process limits are enforced',
        }
      : {
          name: 'resource-limits',
          status: 'warn',
          message: `${unenforced.join(', ')} limits cannot be enforced here (rootless podman on cgroup v1): a submission and its image build (--build-memory, --build-cpus, --build-pids-limit are not applied) can use the whole host`,
          hint: 'run the worker with rootful podman, or on a cgroup v2 host that delegates the memory, cpu and pids controllers to the user',
        },
  );
  return checks;
}

async function probeImage(
  engine: Engine,
  options: ProbeOptions,
  labels: Record<string, string>,
  checks: Check[],
): Promise<string | undefined> {
  const busyboxPath = options.busyboxPath ?? '/bin/busybox';
  let busybox: Buffer;
  try {
    busybox = await readFile(busyboxPath);
  } catch {
    checks.push({
      name: 'build',
      status: 'fail',
      message: `no static busybox at ${busyboxPath} to build the probe image from`,
      hint: 'install busybox-static (apt-get install busybox-static)',
    });
    return undefined;
  }
  try {
    const context = await probeContext(busybox);
    const built = await engine.buildImage({
      role: 'probe',
      context: Readable.from([context]),
      labels,
    });
    checks.push({
      name: 'build',
      status: 'pass',
      message: `builds without network${built.cached ? ' (probe image cached)' : ''}: ${built.image}`,
    });
    return built.image;
  } catch (error) {
    checks.push(fail('build', 'cannot build an image without network', error));
    return undefined;
  }
}

async function probeRun(
  engine: Engine,
  image: string,
  options: ProbeOptions,
  labels: Record<string, string>,
): Promise<Check[]> {
  const limits = options.limits ?? DEFAULT_LIMITS;
  let lines: string[];
  // A range as a task's container has one: its own, taken and given back like theirs.
  let held: HeldIdMap | undefined;
  try {
    held = await options.userns?.userns?.acquire();
  } catch (error) {
    return [fail('userns', 'no user namespace range is free for the probe container', error)];
  }
  try {
    const input = await engine.createVolume(labels);
    const result = await engine.run({
      image,
      command: ['sh', '-c', PROBE_SCRIPT],
      mounts: [{ volume: input, target: PROBE_INPUT, readOnly: true }],
      labels,
      limits,
      timeoutMs: options.timeoutMs ?? 60_000,
      logTailLines: 400,
      logTailBytes: 64 * 1024,
      ...(options.extraArgs ? { extraArgs: options.extraArgs } : {}),
      ...(held ? { idMaps: held.map } : {}),
      // Removed here, while its range is still held.
      removeLater: false,
    });
    if (result.exitCode !== 0) {
      return [
        {
          name: 'run',
          status: 'fail',
          message: `the probe container exited with ${result.exitCode}`,
          detail: result.logTail,
        },
      ];
    }
    lines = result.logTail.split('\n');
  } catch (error) {
    return [fail('run', 'cannot run a hardened container', error)];
  } finally {
    held?.release();
  }
  const facts = parseProbe(lines);
  const userns = options.userns;
  return [
    { name: 'run', status: 'pass', message: 'runs a hardened container' },
    ...judgeProbe(facts, engine.info, limits),
    judgeCoreDumps(facts),
    ...(userns ? [judgeUserns(facts, held?.map ?? userns.usernsShared ?? 'unknown')] : []),
  ];
}
