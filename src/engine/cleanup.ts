import { z } from 'zod';
import { WorkerError } from '../errors.js';
import {
  containerListArgs,
  pruneVolumesArgs,
  removeContainersArgs,
  removeContainersByLabelArgs,
  removeVolumesArgs,
  volumeListArgs,
} from './args.js';
import type { EngineContext } from './context.js';
import { execEngine, execEngineRaw } from './exec.js';

const labelsSchema = z.record(z.string(), z.string()).nullable();

/**
 * Force-removes the containers, then the volumes, that carry all of these labels: a task's
 * leftovers when it ends, or every orphan of a worker after a crash.
 */
export async function removeByLabels(
  ctx: EngineContext,
  labels: Record<string, string>,
): Promise<{ containers: string[]; volumes: string[] }> {
  // No labels would match everything on the host, including what is not ours.
  if (Object.keys(labels).length === 0) {
    throw new WorkerError('INTERNAL', 'removeByLabels needs at least one label');
  }
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  // One label on a local podman: each kind found and removed in one call, two calls in all.
  // The prune leaves a volume some other container still uses; the containers of these
  // labels are gone by then, so only a container that is not the task's could hold one.
  // podman 4.3's remote client removes only the first container `rm --filter` matches.
  if (ctx.info.name === 'podman' && !ctx.cli.engineHost && Object.keys(labels).length === 1) {
    const containers = words(await execEngine(ctx.cli, removeContainersByLabelArgs(labels), call));
    const volumes = words(await execEngine(ctx.cli, pruneVolumesArgs(labels), call));
    return { containers, volumes };
  }
  const containers = await matching(
    ctx,
    words(await execEngine(ctx.cli, containerListArgs(labels), call)),
    labels,
    ['inspect', '--type', 'container', '--format', '{{json .Config.Labels}}'],
  );
  if (containers.length > 0) await execEngine(ctx.cli, removeContainersArgs(containers), call);
  const volumes = await matching(
    ctx,
    words(await execEngine(ctx.cli, volumeListArgs(labels), call)),
    labels,
    ['volume', 'inspect', '--format', '{{json .Labels}}'],
  );
  if (volumes.length > 0) await execEngine(ctx.cli, removeVolumesArgs(volumes), call);
  return { containers, volumes };
}

/**
 * podman 4.3 joins several `label=` filters of `volume ls` with OR, so with more than one
 * label the candidates are checked against every label here. One at a time: a candidate of
 * another task may be removed by that task meanwhile, and is then simply not ours to remove.
 * One label needs no check: the engine's filter already matched exactly it.
 */
async function matching(
  ctx: EngineContext,
  candidates: string[],
  labels: Record<string, string>,
  inspect: string[],
): Promise<string[]> {
  if (Object.keys(labels).length === 1) return candidates;
  const checks = await Promise.all(
    candidates.map(async (candidate) => {
      const result = await execEngineRaw(ctx.cli, [...inspect, candidate], {
        timeoutMs: ctx.options.callTimeoutMs,
      });
      if (result.exitCode !== 0) return false;
      const have = labelsSchema.parse(JSON.parse(result.stdout.trim() || 'null')) ?? {};
      return Object.entries(labels).every(([key, value]) => have[key] === value);
    }),
  );
  return candidates.filter((_, i) => checks[i]);
}

function words(text: string): string[] {
  return text.split(/\s+/).filter(Boolean);
}

/** Containers with one label of that value: one filter, so no OR of podman 4.3's filters. */
export async function countContainers(
  ctx: EngineContext,
  label: string,
  value: string,
): Promise<number> {
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  return words(await execEngine(ctx.cli, containerListArgs({ [label]: value }), call)).length;
}
