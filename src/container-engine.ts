import { baseStoreSummary } from './build/base-summary.js';
import { buildImage } from './build/build.js';
import { removeOrphanBuilds } from './build/orphans.js';
import { pingArgs } from './engine/args.js';
import { countContainers, removeByLabels } from './engine/cleanup.js';
import type { EngineContext } from './engine/context.js';
import { detectEngine } from './engine/detect.js';
import { execEngine } from './engine/exec.js';
import { imageLookup, listImages, pruneImages, removeImage } from './engine/images.js';
import { listManaged } from './engine/managed.js';
import { prepareRuns, runContainer } from './engine/run.js';
import type { Engine, EngineInfo, EngineOptions } from './engine/types.js';
import { measureVolume, volumeMountpoint } from './engine/volume-usage.js';
import {
  createVolume,
  exportVolume,
  importVolume,
  listVolumes,
  removeVolumes,
} from './engine/volumes.js';

/**
 * Detects the engine once and returns the worker's one door to it: the engine's calls
 * (src/engine) and the builds made through them (src/build).
 */
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
    imageLookup: (expected) => imageLookup(ctx, expected),
    countContainers: (label, value) => countContainers(ctx, label, value),
    createVolume: (labels, name) => createVolume(ctx, labels, name),
    listVolumes: (label) => listVolumes(ctx, label),
    removeVolumes: (names) => removeVolumes(ctx, names),
    importVolume: (volume, tar, signal) => importVolume(ctx, volume, tar, signal),
    exportVolume: (volume, signal) => exportVolume(ctx, volume, signal),
    run: (spec) => runContainer(ctx, spec),
    prepareRuns: (specs) => prepareRuns(ctx, specs),
    removeByLabels: (labels) => removeByLabels(ctx, labels),
    removeOrphanBuilds: (owner) => removeOrphanBuilds(ctx, owner),
    listManaged: () => listManaged(ctx),
    baseStore: () => baseStoreSummary(ctx),
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

export { detectEngine } from './engine/detect.js';
export { DEFAULT_LIMITS } from './engine/limits.js';
