import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { WorkerError } from '../errors.js';
import {
  createArgs,
  killArgs,
  removeContainersArgs,
  startAttachArgs,
  stateInspectArgs,
  waitArgs,
} from './args.js';
import type { EngineContext } from './context.js';
import { execEngine, execEngineRaw } from './exec.js';
import { LogTail } from './log-tail.js';
import { checkMountedVolumes } from './mount-check.js';
import { createRunCgroup, type RunCgroup } from './run-cgroup.js';
import { createOomRecord, type OomRecord, runEnding } from './run-ending.js';
import { startFailure } from './start-failure.js';
import type { PreparedRun, RunResult, RunSpec } from './types.js';

const stateSchema = z.object({
  Status: z.string().optional(),
  ExitCode: z.number(),
  OOMKilled: z.boolean().optional(),
});

/** How often a running container's memory is sampled where the kernel keeps no peak. */
const USAGE_SAMPLE_MS = 1000;

/**
 * create -> (volumes checked) -> start --attach with a deadline -> (kill) -> (inspect) -> rm.
 * `run --rm` would remove the exit code and OOM flag before they are read, could not check
 * the volumes between create and start, and killing a `run` client leaves the container
 * running, hence the separate steps.
 */
export async function runContainer(ctx: EngineContext, spec: RunSpec): Promise<RunResult> {
  const [prepared] = await prepareRuns(ctx, [spec]);
  return (prepared as PreparedRun).start();
}

/**
 * Creates the containers of several runs, then checks the volumes of all of them in
 * one call; each is started later (a task's steps, one after the other). A volume checked
 * once its container exists cannot come back empty before that container starts: podman
 * removes a volume in use only with --force, which removes the container too, and docker
 * refuses to remove it at all; only a create re-creates a missing volume.
 */
export async function prepareRuns(
  ctx: EngineContext,
  specs: readonly RunSpec[],
): Promise<PreparedRun[]> {
  if (specs.some((spec) => spec.signal?.aborted))
    throw new WorkerError('CANCELLED', 'The run was cancelled before it started');
  const made: Created[] = [];
  try {
    // One after the other: podman 4.3 creating containers that share volumes at the same
    // time can deadlock on the volumes' locks (two creates hung for minutes, holding up
    // every other call on the host).
    for (const spec of specs) made.push(await createOne(ctx, spec));
    const volumes = [...new Set(specs.flatMap((spec) => spec.mounts.map((m) => m.volume)))];
    await checkMountedVolumes(
      ctx,
      made.map((m) => m.name),
      volumes,
    );
  } catch (error) {
    await Promise.all(made.map((m) => m.release(!m.spec.removeLater)));
    throw error;
  }
  return made.map((m) => ({
    start: async (live) => {
      let leftForCaller = false;
      const spec = { ...m.spec, ...live };
      try {
        const result = await measured(m.cgroup, () => startAndWait(ctx, m.name, spec, m.oom));
        leftForCaller = spec.removeLater === true;
        return result;
      } finally {
        await m.release(!leftForCaller);
      }
    },
    discard: () => m.release(!m.spec.removeLater),
  }));
}

interface Created {
  name: string;
  spec: RunSpec;
  cgroup: RunCgroup | undefined;
  oom: OomRecord | undefined;
  /** Removes what the run made for itself, and the container unless the caller keeps it. */
  release(removeContainer: boolean): Promise<void>;
}

async function createOne(ctx: EngineContext, spec: RunSpec): Promise<Created> {
  const name = `cw-run-${randomBytes(8).toString('hex')}`;
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const cgroup = await createRunCgroup(ctx.info, ctx.options.owner);
  let oom: OomRecord | undefined;
  try {
    oom = await createOomRecord(ctx);
    await execEngine(ctx.cli, createArgs(ctx.info, name, spec, cgroup?.parent), call);
  } catch (error) {
    // The image may have been removed behind the worker's back: ask again next time.
    ctx.knownImages?.delete(spec.image);
    await cgroup?.remove().catch(() => undefined);
    await oom?.remove().catch(() => undefined);
    throw error;
  }
  return {
    name,
    spec,
    cgroup,
    oom,
    release: async (removeContainer) => {
      if (removeContainer)
        await execEngine(ctx.cli, removeContainersArgs([name]), call).catch(() => undefined);
      await cgroup?.remove().catch(() => undefined);
      await oom?.remove().catch(() => undefined);
    },
  };
}

/** Runs the container, sampling its cgroup while it runs and reading it once it has ended. */
async function measured(
  cgroup: RunCgroup | undefined,
  run: () => Promise<RunResult>,
): Promise<RunResult> {
  if (!cgroup) return run();
  const timer = setInterval(() => void cgroup.sample().catch(() => undefined), USAGE_SAMPLE_MS);
  timer.unref();
  let result: RunResult;
  try {
    result = await run();
  } finally {
    clearInterval(timer);
  }
  const usage = await cgroup.read().catch(() => ({}));
  return Object.keys(usage).length > 0 ? { ...result, usage } : result;
}

/**
 * `start --attach` starts the container and streams its output until it exits, with the
 * container's exit code as its own: one call instead of start, wait and reading the logs
 * (podman 4.3's `logs --follow` can also stop before a short container's end). A clean
 * exit needs no inspect; anything else is read from the container's state, which also
 * tells a container that exited 125 from a start the engine refused.
 */
async function startAndWait(
  ctx: EngineContext,
  name: string,
  spec: RunSpec,
  oom: OomRecord | undefined,
): Promise<RunResult> {
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const started = Date.now();
  const tail = new LogTail(spec.logTailLines, spec.logTailBytes);
  // At the deadline or on cancel the container is killed by name, and the attached client
  // then ends by itself: killing the client instead could leave it (or, behind a wrapper
  // such as runuser, the real one) attached.
  // Cancelled while it was being created: it is not started at all.
  if (spec.signal?.aborted) {
    return {
      exitCode: 0,
      oomKilled: false,
      killedFromOutside: false,
      timedOut: false,
      cancelled: true,
      durationMs: 0,
      logTail: '',
    };
  }
  let stopped: 'timeout' | 'cancel' | undefined;
  let ended = false;
  let killing: Promise<unknown> = Promise.resolve();
  // A kill that comes before the engine has started the container does nothing: it is
  // repeated until the attached client ends.
  const killUntilEnded = async () => {
    while (!ended) {
      await execEngineRaw(ctx.cli, killArgs(name), call);
      if (!ended) await sleep(1000);
    }
  };
  const stop = (why: 'timeout' | 'cancel') => {
    if (stopped) return;
    stopped = why;
    killing = killUntilEnded();
  };
  const timer = setTimeout(() => stop('timeout'), spec.timeoutMs);
  const onAbort = () => stop('cancel');
  spec.signal?.addEventListener('abort', onAbort, { once: true });
  if (spec.signal?.aborted) onAbort();
  let attached: Awaited<ReturnType<typeof execEngineRaw>>;
  try {
    attached = await execEngineRaw(oom?.cli ?? ctx.cli, startAttachArgs(name), {
      // Only a safety net: the kill above ends the client first.
      timeoutMs: spec.timeoutMs + ctx.options.callTimeoutMs,
      killSignal: 'SIGKILL',
      onLine: (line, stream) => {
        tail.push(line);
        spec.onLogLine?.(line, stream);
      },
      tailLines: 1,
      tailBytes: 1024,
    });
  } finally {
    ended = true;
    clearTimeout(timer);
    spec.signal?.removeEventListener('abort', onAbort);
  }
  await killing;
  if (attached.timedOut) {
    // The safety net killed the client: the container may still run.
    stopped ??= 'timeout';
    await execEngineRaw(ctx.cli, killArgs(name), call);
  }
  const timedOut = stopped === 'timeout';
  const cancelled = stopped === 'cancel';
  if (stopped) await execEngineRaw(ctx.cli, waitArgs(name), call);
  const durationMs = Date.now() - started;
  if (attached.exitCode === 0 && !timedOut && !cancelled) {
    return {
      exitCode: 0,
      oomKilled: false,
      killedFromOutside: false,
      timedOut,
      cancelled,
      durationMs,
      logTail: tail.toString(),
    };
  }
  const state = stateSchema.parse(
    JSON.parse(await execEngine(ctx.cli, stateInspectArgs(name), call)),
  );
  if (!timedOut && !cancelled && state.Status === 'created') {
    const targets = spec.mounts.map((m) => m.target);
    throw startFailure(ctx, tail.toString(), attached.exitCode, targets);
  }
  const oomSeen = await oom?.seen();
  return {
    exitCode: state.ExitCode,
    ...runEnding(ctx.info, spec, state, oomSeen, timedOut || cancelled),
    timedOut,
    cancelled,
    durationMs,
    logTail: tail.toString(),
  };
}
