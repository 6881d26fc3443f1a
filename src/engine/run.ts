import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { WorkerError } from '../errors.js';
import { createArgs, removeContainersArgs, stateInspectArgs } from './args.js';
import type { EngineContext } from './context.js';
import { capDetail, engineFailure, execEngine, execEngineRaw, hintFor } from './exec.js';
import { LogTail } from './log-tail.js';
import { checkMountedVolumes } from './mount-check.js';
import type { RunResult, RunSpec } from './types.js';

const stateSchema = z.object({
  ExitCode: z.number(),
  OOMKilled: z.boolean().optional(),
});

const SIGKILL_EXIT = 137;

/**
 * create -> start -> wait with a deadline -> (kill) -> inspect -> rm. `run --rm` would
 * remove the exit code and OOM flag before they are read, and killing a `run` client
 * leaves the container running, hence the separate steps.
 */
export async function runContainer(ctx: EngineContext, spec: RunSpec): Promise<RunResult> {
  if (spec.signal?.aborted)
    throw new WorkerError('CANCELLED', 'The run was cancelled before it started');
  const name = `cw-run-${randomBytes(8).toString('hex')}`;
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  await execEngine(ctx.cli, createArgs(ctx.info, name, spec), call);
  try {
    await checkMountedVolumes(
      ctx,
      name,
      spec.mounts.map((m) => m.volume),
    );
    return await startAndWait(ctx, name, spec);
  } finally {
    await execEngine(ctx.cli, removeContainersArgs([name]), call).catch(() => undefined);
  }
}

async function startAndWait(ctx: EngineContext, name: string, spec: RunSpec): Promise<RunResult> {
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const started = Date.now();
  const start = await execEngineRaw(ctx.cli, ['start', name], call);
  if (start.exitCode !== 0 || start.timedOut)
    throw startFailure(ctx, start.outputTail, start.exitCode);

  const follow = spec.onLogLine ? followLogs(ctx, name, spec) : undefined;
  const remaining = Math.max(1, spec.timeoutMs - (Date.now() - started));
  const wait = await execEngineRaw(ctx.cli, ['wait', name], {
    timeoutMs: remaining,
    signal: spec.signal,
  });
  const timedOut = wait.timedOut;
  const cancelled = wait.cancelled;
  if (timedOut || cancelled) {
    await execEngineRaw(ctx.cli, ['kill', name], call);
    await execEngineRaw(ctx.cli, ['wait', name], call);
  } else if (wait.exitCode !== 0) {
    throw engineFailure(`${ctx.cli.name} wait`, wait.exitCode, wait.outputTail);
  }
  const durationMs = Date.now() - started;
  const state = stateSchema.parse(
    JSON.parse(await execEngine(ctx.cli, stateInspectArgs(name), call)),
  );
  const shown = (await follow?.stop()) ?? { stdout: 0, stderr: 0 };
  const tail = await readLogs(ctx, name, spec, shown);
  return {
    exitCode: state.ExitCode,
    oomKilled: isOom(ctx, spec, state, timedOut || cancelled),
    timedOut,
    cancelled,
    durationMs,
    logTail: tail.toString(),
  };
}

/**
 * podman 4.3 with runc on cgroup v1 reports OOMKilled=false when the kernel's memcg OOM
 * killer did kill the container. The worker knows whether it killed the container itself
 * (deadline, cancel) and conmon's --timeout only fires after that deadline; so a SIGKILL
 * exit it did not cause, with a memory limit in force, is counted as OOM. A submission
 * that SIGKILLs its own init would be counted as OOM too: its failure either way.
 */
function isOom(
  ctx: EngineContext,
  spec: RunSpec,
  state: z.infer<typeof stateSchema>,
  killedByWorker: boolean,
): boolean {
  if (killedByWorker) return false;
  if (state.OOMKilled) return true;
  const memoryLimited =
    !(ctx.info.unenforcedLimits ?? []).includes('memory') && spec.limits.memoryBytes > 0;
  return memoryLimited && state.ExitCode === SIGKILL_EXIT;
}

type LineCounts = Record<'stdout' | 'stderr', number>;

/**
 * Shows the container's lines as they come, for a person watching a task. `podman logs
 * --follow` started next to a short-lived container can stop before the end (podman 4.3),
 * so this is only for display: the complete output is read once the container stopped,
 * and lines already shown here are not shown twice.
 */
function followLogs(ctx: EngineContext, name: string, spec: RunSpec) {
  const shown: LineCounts = { stdout: 0, stderr: 0 };
  const controller = new AbortController();
  const following = execEngineRaw(ctx.cli, ['logs', '--follow', name], {
    timeoutMs: spec.timeoutMs + ctx.options.callTimeoutMs,
    signal: controller.signal,
    onLine: (line, stream) => {
      shown[stream]++;
      spec.onLogLine?.(line, stream);
    },
    tailLines: 1,
    tailBytes: 1024,
  }).catch(() => undefined);
  return {
    async stop(): Promise<LineCounts> {
      // It ends by itself when the container stops; give it a moment to flush, then stop it.
      const timer = setTimeout(() => controller.abort(), 2000);
      await following;
      clearTimeout(timer);
      return shown;
    },
  };
}

/** Reads the stopped container's output once, line by line. Only a bounded tail is kept. */
async function readLogs(
  ctx: EngineContext,
  name: string,
  spec: RunSpec,
  shown: LineCounts,
): Promise<LogTail> {
  const tail = new LogTail(spec.logTailLines, spec.logTailBytes);
  const seen: LineCounts = { stdout: 0, stderr: 0 };
  await execEngineRaw(ctx.cli, ['logs', name], {
    timeoutMs: ctx.options.callTimeoutMs,
    onLine: (line, stream) => {
      tail.push(line);
      if (++seen[stream] > shown[stream]) spec.onLogLine?.(line, stream);
    },
    tailLines: 1,
    tailBytes: 1024,
  });
  return tail;
}

function startFailure(ctx: EngineContext, stderr: string, exitCode: number): WorkerError {
  // The image's own command is missing or not executable: the submission is at fault.
  if (
    !hintFor(stderr) &&
    /executable file not found|no such file or directory|permission denied/i.test(stderr)
  ) {
    return new WorkerError('CONTAINER_FAILED', 'The container could not start its command', {
      detail: capDetail(stderr),
    });
  }
  return engineFailure(`${ctx.cli.name} start`, exitCode, stderr);
}
