import type { StepUsage } from '../clients/types.js';
import { formatDuration } from '../config/duration.js';
import { formatSize } from '../config/size.js';
import { LABEL_STEP } from '../engine/labels.js';
import type { SizedDisk } from '../engine/sized-disk.js';
import type { RunResult, VolumeMount } from '../engine/types.js';
import { WorkerError } from '../errors.js';
import { type GpuUsageSample, type GpuWatch, watchGpus } from '../gpu/usage.js';
import type { StepName, TaskEnv, TaskRun } from './context.js';
import { watchDisk } from './disk-watch.js';
import { submissionGpus } from './gpus.js';
import type { TaskIdMaps } from './scope.js';

export interface ContainerStep {
  step: StepName;
  /** Who wrote the code: the platform's workflow, or a participant's submission. */
  owner: 'workflow' | 'submission';
  image: string;
  command: string[];
  mounts: VolumeMount[];
  timeoutMs: number;
  labels: Record<string, string>;
  /** The sized filesystems of the task's bounded volumes, by volume name (TaskScope.disks). */
  disks?: ReadonlyMap<string, SizedDisk>;
  /** The task's user namespaces (TaskScope.idMaps); none: the engine's namespace. */
  idMaps?: TaskIdMaps;
}

/** Runs one step's container and turns anything but a clean exit into a WorkerError. */
export async function runContainerStep(
  env: TaskEnv,
  run: TaskRun,
  spec: ContainerStep,
): Promise<RunResult> {
  const who = `the ${spec.owner}'s ${spec.step} step`;
  const disk = watchDisk(env, run, spec.step, spec.mounts, who, spec.disks);
  // The workflow (detarget, perf) never gets a GPU.
  const gpus = spec.owner === 'submission' ? submissionGpus(env, run) : undefined;
  let result: RunResult;
  let gpuWatch: GpuWatch | undefined;
  try {
    // What the volumes hold before the container writes: written_bytes is what it adds.
    await disk.ready;
    const idMaps = await spec.idMaps?.for(spec.owner);
    gpuWatch = gpus ? watchGpus(gpus.uuids) : undefined;
    result = await env.engine.run({
      ...(idMaps ? { idMaps } : {}),
      image: spec.image,
      command: spec.command,
      mounts: spec.mounts,
      labels: { ...spec.labels, [LABEL_STEP]: spec.step },
      limits: env.limits,
      timeoutMs: spec.timeoutMs,
      logTailLines: env.logTailLines,
      logTailBytes: env.logTailBytes,
      signal: disk.signal,
      gpus,
      onLogLine: (line, stream) => run.onEvent?.({ type: 'log', step: spec.step, line, stream }),
      // The task's cleanup removes its containers by their run label, all in one call.
      removeLater: true,
    });
  } catch (error) {
    await gpuWatch?.stop();
    throw (await disk.stop()) ?? error;
  }
  const gpuUsage = await gpuWatch?.stop();
  // Past the limit, the watcher's kill is not a cancel: the step failed.
  const overLimit = await disk.stop();
  if (run.usage) run.usage[spec.step] = stepUsage(result, disk.written(), gpuUsage);
  if (overLimit) throw overLimit;
  const failure = describeFailure(env, spec, result);
  if (failure) throw failure;
  return result;
}

export function describeFailure(
  env: TaskEnv,
  spec: ContainerStep,
  result: RunResult,
): WorkerError | undefined {
  const who = `the ${spec.owner}'s ${spec.step} step`;
  const detail = result.logTail ? `last lines of its output:\n${result.logTail}` : undefined;
  // Only the submission's own output may leave the worker in a report.
  const output =
    spec.owner === 'submission' && result.logTail
      ? { submissionOutput: result.logTail.split('\n') }
      : {};
  if (result.cancelled) {
    return new WorkerError('CANCELLED', `${who} was cancelled`, { retryable: true });
  }
  if (result.timedOut) {
    return new WorkerError(
      'CONTAINER_TIMEOUT',
      `${who} ran past its ${formatDuration(spec.timeoutMs)} limit and was killed`,
      { detail, hint: timeoutHint(spec), ...output },
    );
  }
  if (result.oomKilled) {
    return new WorkerError(
      'CONTAINER_OOM',
      `${who} ran out of memory (limit ${formatSize(env.limits.memoryBytes)}) and was killed`,
      { detail, hint: 'the operator can raise it with --memory', ...output },
    );
  }
  if (result.killedFromOutside) {
    return new WorkerError(
      'CONTAINER_KILLED',
      `${who} was killed from outside the worker (exit code ${result.exitCode}${exitMeaning(result.exitCode)}), not at its memory limit`,
      {
        retryable: true,
        detail,
        hint: 'something on the host stopped the container (podman or docker kill or stop, the host out of memory, a shutdown); the task is run again',
      },
    );
  }
  if (result.exitCode !== 0) {
    return new WorkerError(
      'CONTAINER_FAILED',
      `${who} exited with code ${result.exitCode}${exitMeaning(result.exitCode)}`,
      { detail, ...output },
    );
  }
  return undefined;
}

function timeoutHint(spec: ContainerStep): string {
  if (spec.owner === 'workflow') return 'the operator can raise it with --docker-timeout';
  return spec.step === 'train'
    ? 'the operator can raise it with --learn-timeout'
    : 'the operator can raise it with --predict-timeout';
}

function exitMeaning(code: number): string {
  switch (code) {
    case 126:
      return ' (its command could not be invoked)';
    case 127:
      return ' (its command was not found in the image)';
    case 137:
      return ' (killed by SIGKILL)';
    case 143:
      return ' (killed by SIGTERM)';
    default:
      return '';
  }
}

/** What the step cost, as far as this host can measure it (SPEC.md section 7). */
function stepUsage(
  result: RunResult,
  written: number | undefined,
  gpus: GpuUsageSample[] | undefined,
): StepUsage {
  const { cpuSeconds, peakMemoryBytes } = result.usage ?? {};
  return {
    wall_s: seconds(result.durationMs / 1000),
    ...(cpuSeconds !== undefined ? { cpu_s: seconds(cpuSeconds) } : {}),
    ...(peakMemoryBytes !== undefined ? { peak_memory_bytes: peakMemoryBytes } : {}),
    ...(written !== undefined ? { written_bytes: written } : {}),
    ...(gpus?.length
      ? {
          gpus: gpus.map((g) => ({
            uuid: g.uuid,
            ...(g.busySeconds !== undefined ? { busy_s: seconds(g.busySeconds) } : {}),
            ...(g.peakMemoryBytes !== undefined ? { peak_memory_bytes: g.peakMemoryBytes } : {}),
          })),
        }
      : {}),
  };
}

/** Seconds to the millisecond: finer is noise. */
function seconds(value: number): number {
  return Math.round(value * 1000) / 1000;
}
