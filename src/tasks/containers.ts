import type { StepUsage } from '../clients/types.js';
import { formatDuration } from '../config/duration.js';
import { formatSize } from '../config/size.js';
import { LABEL_STEP } from '../engine/labels.js';
import type { SizedDisk } from '../engine/sized-disk.js';
import type { PreparedRun, RunResult, RunSpec, VolumeMount } from '../engine/types.js';
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

/** The engine's run of a step, less what only its start needs (the signal, the log listener). */
async function runSpecOf(env: TaskEnv, run: TaskRun, spec: ContainerStep): Promise<RunSpec> {
  const idMaps = await spec.idMaps?.for(spec.owner);
  // The workflow (detarget, perf) never gets a GPU.
  const gpus = spec.owner === 'submission' ? submissionGpus(env, run) : undefined;
  return {
    ...(idMaps ? { idMaps } : {}),
    image: spec.image,
    command: spec.command,
    mounts: spec.mounts,
    labels: { ...spec.labels, [LABEL_STEP]: spec.step },
    limits: env.limits,
    timeoutMs: spec.timeoutMs,
    logTailLines: env.logTailLines,
    logTailBytes: env.logTailBytes,
    gpus,
    // The task's cleanup removes its containers by their run label, all in one call.
    removeLater: true,
  };
}

/** Steps whose containers are created, and their volumes checked, ahead of their runs. */
export interface PreparedSteps {
  /** Runs the prepared container of this step, as runContainerStep. */
  run(step: StepName): Promise<RunResult>;
  /** Discards the containers never started (the task failed before their step). */
  discard(): Promise<void>;
}

/**
 * Creates the containers of a task's steps before the first starts and checks all their volumes in one
 * engine call, so that each step only starts its container.
 */
export async function prepareContainerSteps(
  env: TaskEnv,
  run: TaskRun,
  specs: readonly ContainerStep[],
): Promise<PreparedSteps> {
  const runSpecs = await Promise.all(specs.map((spec) => runSpecOf(env, run, spec)));
  const prepared = await env.engine.prepareRuns(runSpecs);
  const waiting = new Map(specs.map((spec, i) => [spec.step, { spec, run: prepared[i] }]));
  return {
    run: async (step) => {
      const one = waiting.get(step);
      if (!one?.run) throw new WorkerError('INTERNAL', `no prepared container for step ${step}`);
      waiting.delete(step);
      return runContainerStep(env, run, one.spec, one.run);
    },
    discard: async () => {
      const left = [...waiting.values()];
      waiting.clear();
      await Promise.all(left.map((one) => one.run?.discard()));
    },
  };
}

/** Runs one step's container and turns anything but a clean exit into a WorkerError. */
export async function runContainerStep(
  env: TaskEnv,
  run: TaskRun,
  spec: ContainerStep,
  prepared?: PreparedRun,
): Promise<RunResult> {
  const who = `the ${spec.owner}'s ${spec.step} step`;
  const disk = watchDisk(env, run, spec.step, spec.mounts, who, spec.disks);
  let result: RunResult;
  let gpuWatch: GpuWatch | undefined;
  try {
    // What the volumes hold before the container writes: written_bytes is what it adds.
    await disk.ready;
    const runSpec = prepared ? undefined : await runSpecOf(env, run, spec);
    const gpus = spec.owner === 'submission' ? submissionGpus(env, run) : undefined;
    gpuWatch = gpus ? watchGpus(gpus.uuids) : undefined;
    const live = {
      signal: disk.signal,
      onLogLine: (line: string, stream: 'stdout' | 'stderr') =>
        run.onEvent?.({ type: 'log', step: spec.step, line, stream }),
    };
    result = prepared
      ? await prepared.start(live)
      : await env.engine.run({ ...(runSpec as RunSpec), ...live });
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
