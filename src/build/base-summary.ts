import type { EngineContext } from '../engine/context.js';
import type { BaseStoreSummary } from '../engine/types.js';
import { summarizeBases } from './base-prune.js';
import { baseStoreFor } from './store.js';
import { findBuildUser } from './user.js';

/**
 * The base store this engine's untrusted builds use (the build user's, else the engine's
 * own), looked at without changing it; undefined where builds have none (docker, a remote
 * podman).
 */
export async function baseStoreSummary(ctx: EngineContext): Promise<BaseStoreSummary | undefined> {
  if (ctx.info.name !== 'podman' || ctx.cli.engineHost) return undefined;
  const byUser = !ctx.info.rootless && !ctx.options.buildUserns && process.getuid?.() === 0;
  const user = byUser ? await findBuildUser(ctx.options.buildUser ?? 'auto') : undefined;
  return summarizeBases(ctx, await baseStoreFor(ctx, user, { make: false }));
}
