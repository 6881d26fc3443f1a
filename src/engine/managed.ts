import {
  containerLabelLinesArgs,
  containerListArgs,
  volumeLabelLinesArgs,
  volumeListArgs,
} from './args.js';
import type { EngineContext } from './context.js';
import { execEngine, execEngineRaw } from './exec.js';
import { LABEL_MANAGED, LABEL_WORKER } from './labels.js';
import type { ManagedObjects } from './types.js';

/**
 * Every container and volume of any compute-worker on this engine, with the worker id it
 * carries (doctor looks for those no live worker owns). One listing and one inspect call
 * of each kind; what is removed meanwhile is simply missing from the answer.
 */
export async function listManaged(ctx: EngineContext): Promise<ManagedObjects> {
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const managed = { [LABEL_MANAGED]: 'true' };
  const owners = async (list: string[], inspect: (names: string[]) => string[]) => {
    const names = (await execEngine(ctx.cli, list, call)).split(/\s+/).filter(Boolean);
    if (names.length === 0) return [];
    const out = await execEngineRaw(ctx.cli, inspect(names), call);
    return out.stdout
      .split('\n')
      .map((line) => line.split('\t'))
      .filter(([name, labels]) => name && labels)
      .map(([name = '', labels = '']) => ({ name, worker: workerOf(labels) }));
  };
  const [containers, volumes] = await Promise.all([
    owners(containerListArgs(managed), containerLabelLinesArgs),
    owners(volumeListArgs(managed), volumeLabelLinesArgs),
  ]);
  return { containers, volumes };
}

function workerOf(json: string): string | undefined {
  try {
    const labels = JSON.parse(json) as Record<string, unknown> | null;
    const worker = labels?.[LABEL_WORKER];
    return typeof worker === 'string' ? worker : undefined;
  } catch {
    return undefined;
  }
}
