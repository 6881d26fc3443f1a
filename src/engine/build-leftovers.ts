import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import {
  BUILD_MARK_ARG,
  externalContainerListArgs,
  removeContainersArgs,
  storageInfoArgs,
} from './args.js';
import type { EngineContext } from './context.js';
import { execEngine } from './exec.js';

const builderSchema = z.object({ Args: z.record(z.string(), z.string()).nullish() });

/**
 * Removes the buildah working containers of one build that a killed `podman build` left
 * behind (they have no labels; `ps --external` lists them). Each one's buildah.json in
 * the engine's storage keeps the build arguments it was made with, and every untrusted
 * build passes its own mark as one: so only this build's containers are removed, never
 * those of a build running next to it. Returns the removed ids.
 */
export async function removeBuildLeftovers(ctx: EngineContext, mark: string): Promise<string[]> {
  if (ctx.cli.name !== 'podman') return [];
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const ids = (await listExternal(ctx, call))
    .split(/\s+/)
    .filter((id) => /^[0-9a-f]{64}$/.test(id));
  if (ids.length === 0) return [];
  const [graphRoot = '', driver = ''] = (await execEngine(ctx.cli, storageInfoArgs(), call))
    .trim()
    .split('\t');
  const ours: string[] = [];
  for (const id of ids) {
    const file = join(graphRoot, `${driver}-containers`, id, 'userdata', 'buildah.json');
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (!text) continue;
    try {
      const builder = builderSchema.parse(JSON.parse(text));
      if (builder.Args?.[BUILD_MARK_ARG] === mark) ours.push(id);
    } catch {
      // not a working container of this worker
    }
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
