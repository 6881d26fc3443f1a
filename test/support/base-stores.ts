import { baseStoreFor } from '../../src/build/store.js';
import { findBuildUser } from '../../src/build/user.js';
import { execEngineRaw } from '../../src/engine/exec.js';
import type { EngineInfo, EngineOptions } from '../../src/engine/types.js';

/** The base stores keep what builds were given: a test removes its own bases from them. */
export async function removeFromBaseStores(
  info: EngineInfo,
  options: EngineOptions,
  images: readonly string[],
): Promise<void> {
  const ctx = { cli: { name: 'podman' as const, path: info.path }, info, options };
  const user = await findBuildUser('auto');
  const stores = [await baseStoreFor(ctx), ...(user ? [await baseStoreFor(ctx, user)] : [])];
  for (const store of stores) {
    for (const image of images) {
      await execEngineRaw(store.owner.cli, ['rmi', '--force', image], { timeoutMs: 120_000 });
    }
  }
}
