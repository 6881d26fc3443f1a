import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { WorkerError } from '../errors.js';
import { createArgs, removeContainersArgs, stateInspectArgs } from './args.js';
import type { EngineContext } from './context.js';
import { capDetail, engineFailure, execEngine, execEngineRaw, hintFor } from './exec.js';
import { LogTail } from './log-tail.js';
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
  const tail = await readLogs(ctx, name, spec);
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

/**
 * Reads the stopped container's output once, line by line: `podman logs --follow` started
 * next to a short-lived container can stop before the end (podman 4.3), so logs are read
 * after the container has stopped. Only a bounded tail is kept.
 */
async function readLogs(ctx: EngineContext, name: string, spec: RunSpec): Promise<LogTail> {
  const tail = new LogTail(spec.logTailLines, spec.logTailBytes);
  await execEngineRaw(ctx.cli, ['logs', name], {
    timeoutMs: ctx.options.callTimeoutMs,
    onLine: (line, stream) => {
      tail.push(line);
      spec.onLogLine?.(line, stream);
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
