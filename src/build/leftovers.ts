import { join } from 'node:path';
import { z } from 'zod';
import {
  BUILD_MARK_ARG,
  externalContainerListArgs,
  removeContainersArgs,
  storageInfoArgs,
} from '../engine/args.js';
import type { EngineContext } from '../engine/context.js';
import { execEngine } from '../engine/exec.js';
import { readOwnedFile } from './owned-dirs.js';

const builderSchema = z.object({ Args: z.record(z.string(), z.string()).nullish() });

/**
 * Removes the buildah working containers of one build that a killed `podman build` left
 * behind (they have no labels; `ps --external` lists them). Each one's buildah.json in
 * the engine's storage keeps the build arguments it was made with, and every untrusted
 * build passes its own mark as one: so only this build's containers are removed, never
 * those of a build running next to it. With `prefix`, those of every build whose mark
 * starts with it: the builds of one worker (see orphan-builds.ts). Returns the removed ids.
 */
export async function removeBuildLeftovers(
  ctx: EngineContext,
  mark: string,
  match: 'exact' | 'prefix' = 'exact',
): Promise<string[]> {
  // A remote engine's storage is not readable here (remote.ts warns of it at start-up).
  if (ctx.cli.name !== 'podman' || ctx.cli.engineHost) return [];
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const ids = (await listExternal(ctx, call))
    .split(/\s+/)
    .filter((id) => /^[0-9a-f]{64}$/.test(id));
  if (ids.length === 0) return [];
  // Detection read the storage's place once; ask only an engine that did not say.
  const [graphRoot = '', driver = ''] = ctx.info.graphRoot
    ? [ctx.info.graphRoot, ctx.info.storageDriver]
    : (await execEngine(ctx.cli, storageInfoArgs(), call)).trim().split('\t');
  const ours: string[] = [];
  for (const id of ids) {
    const found = await buildMarkOf(graphRoot, driver, id);
    if (found === mark || (match === 'prefix' && found?.startsWith(mark))) ours.push(id);
  }
  if (ours.length > 0) await execEngine(ctx.cli, removeContainersArgs(ours), call);
  return ours;
}

/**
 * `ps --all --external` fails (exit 125) when a working container of another build goes
 * away while it is listed: asked again, it lists the rest.
 */
async function listExternal(ctx: EngineContext, call: { timeoutMs: number }): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await execEngine(ctx.cli, externalContainerListArgs(), call);
    } catch (error) {
      if (attempt >= 3) throw error;
    }
  }
}

/**
 * The build mark a working container was made with, from its buildah.json: null when it
 * has none (not a confined build's), undefined when the file cannot be read or parsed
 * (gone, or not written yet).
 */
export async function buildMarkOf(
  graphRoot: string,
  driver: string,
  id: string,
): Promise<string | null | undefined> {
  const file = join(graphRoot, `${driver}-containers`, id, 'userdata', 'buildah.json');
  const text = await readOwnedFile(file);
  if (!text) return undefined;
  try {
    return builderSchema.parse(JSON.parse(text)).Args?.[BUILD_MARK_ARG] ?? null;
  } catch {
    return undefined;
  }
}
