import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EngineContext } from './context.js';
import type { EngineCli } from './exec.js';
import type { EngineInfo, RunSpec } from './types.js';

const SIGKILL_EXIT = 137;
const SIGTERM_EXIT = 143;

/**
 * podman's conmon, which `start` spawns, writes an empty `oom` file into its working
 * folder when the kernel's OOM killer acts in the container's cgroup. podman 4.3 looks
 * for it elsewhere and, with runc on cgroup v1, reports OOMKilled=false after a real OOM:
 * that file, in a folder of the run's own, is the engine's record of it.
 */
export interface OomRecord {
  /** The CLI to start the container with: it runs in the record's folder. */
  readonly cli: EngineCli;
  /** Whether conmon recorded an OOM kill. */
  seen(): Promise<boolean>;
  remove(): Promise<void>;
}

/**
 * A record for a local podman run as this user; undefined where conmon runs elsewhere (a
 * remote engine, a CLI run as another user, rootless podman) or there is none (docker).
 */
export async function createOomRecord(ctx: EngineContext): Promise<OomRecord | undefined> {
  const { cli, info } = ctx;
  if (cli.name !== 'podman' || cli.engineHost || cli.user || info.rootless) return undefined;
  const dir = await mkdtemp(join(cli.workDir ?? tmpdir(), 'cw-run-'));
  return {
    cli: { ...cli, workDir: dir },
    seen: () =>
      access(join(dir, 'oom')).then(
        () => true,
        () => false,
      ),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface RunEnding {
  oomKilled: boolean;
  killedFromOutside: boolean;
}

/**
 * Why a container that the worker neither stopped nor saw exit by itself ended. The worker
 * knows when it killed a container (deadline, cancel; conmon's --timeout fires only after
 * the deadline). An OOM is what the engine recorded: its OOMKilled flag or conmon's file.
 * Where nothing recorded it (`oomSeen` undefined), podman 4.3 on cgroup v1 cannot say, so
 * a SIGKILL under a memory limit is taken for OOM there. Any other death by SIGKILL or
 * SIGTERM came from outside the worker: an operator's `kill` or `stop`, the host's own OOM
 * killer, a shutdown of the host.
 */
export function runEnding(
  info: Pick<EngineInfo, 'name' | 'cgroupVersion' | 'unenforcedLimits'>,
  spec: Pick<RunSpec, 'limits'>,
  state: { ExitCode: number; OOMKilled?: boolean },
  oomSeen: boolean | undefined,
  killedByWorker: boolean,
): RunEnding {
  if (killedByWorker) return { oomKilled: false, killedFromOutside: false };
  const signalled = state.ExitCode === SIGKILL_EXIT || state.ExitCode === SIGTERM_EXIT;
  const memoryLimited =
    !(info.unenforcedLimits ?? []).includes('memory') && spec.limits.memoryBytes > 0;
  const unrecorded = oomSeen === undefined && info.name === 'podman' && info.cgroupVersion === 1;
  const oomKilled =
    state.OOMKilled === true ||
    oomSeen === true ||
    (unrecorded && memoryLimited && state.ExitCode === SIGKILL_EXIT);
  return { oomKilled, killedFromOutside: signalled && !oomKilled };
}
