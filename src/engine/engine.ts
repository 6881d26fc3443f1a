import { pingArgs } from './args.js';
import { buildImage } from './build.js';
import { removeByLabels } from './cleanup.js';
import type { EngineContext } from './context.js';
import { detectEngine } from './detect.js';
import { execEngine } from './exec.js';
import { listImages, pruneImages, removeImage } from './images.js';
import { removeOrphanBuilds } from './orphan-builds.js';
import { runContainer } from './run.js';
import type { Engine, EngineInfo, EngineOptions } from './types.js';
import { measureVolume, volumeMountpoint } from './volume-usage.js';
import { createVolume, exportVolume, importVolume } from './volumes.js';

/** Detects the engine once and returns the worker's one door to it. */
export async function createEngine(options: EngineOptions): Promise<Engine> {
  const info = await detectEngine(options);
  return engineFor(info, options);
}

/** An Engine over an already detected engine (doctor detects first, then probes). */
export function engineFor(info: EngineInfo, options: EngineOptions): Engine {
  const ctx: EngineContext = {
    cli: {
      name: info.name,
      path: info.path,
      workDir: options.workDir,
      ...(info.engineHost ? { engineHost: info.engineHost } : {}),
    },
    info,
    options,
    builds: new Map(),
    knownImages: new Set(),
  };
  return {
    info,
    buildImage: (request) => buildImage(ctx, request),
    createVolume: (labels) => createVolume(ctx, labels),
    importVolume: (volume, tar, signal) => importVolume(ctx, volume, tar, signal),
    exportVolume: (volume, signal) => exportVolume(ctx, volume, signal),
    run: (spec) => runContainer(ctx, spec),
    removeByLabels: (labels) => removeByLabels(ctx, labels),
    removeOrphanBuilds: (owner) => removeOrphanBuilds(ctx, owner),
    volumeMountpoint: (volume) => volumeMountpoint(ctx, volume),
    measureVolume: (mountpoint, options) => measureVolume(ctx, mountpoint, options),
    ping: async () => {
      await execEngine(ctx.cli, pingArgs(info.name), { timeoutMs: options.callTimeoutMs });
    },
    listImages: (label) => listImages(ctx, label),
    removeImage: (name) => removeImage(ctx, name),
    pruneImages: (label) => pruneImages(ctx, label),
  };
}

export { detectEngine } from './detect.js';
export { DEFAULT_LIMITS } from './limits.js';
