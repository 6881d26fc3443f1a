import { WorkerError } from '../errors.js';
import type { Gpu } from './discover.js';

/** `all`, `none`, or GPUs by index or UUID (`0,1`, `GPU-…`). */
export type GpuSelection = 'all' | 'none' | string[];

export function parseGpuSelection(text: string): GpuSelection {
  const trimmed = text.trim();
  if (trimmed === 'all' || trimmed === 'none') return trimmed;
  const items = trimmed
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) throw new Error('expected all, none, or a list of indices or UUIDs');
  for (const item of items) {
    if (!/^\d+$/.test(item) && !/^(GPU|MIG)-[0-9a-zA-Z-]+$/.test(item)) {
      throw new Error(`"${item}" is neither a GPU index nor a UUID (GPU-…)`);
    }
  }
  return items;
}

/** The GPUs of the host this worker may hand out. Unknown names are an error, not ignored. */
export function selectPool(found: readonly Gpu[], selection: GpuSelection): Gpu[] {
  if (selection === 'all') return [...found];
  if (selection === 'none') return [];
  const pool: Gpu[] = [];
  for (const item of selection) {
    const gpu = found.find((g) =>
      /^\d+$/.test(item) ? g.index === Number(item) : g.uuid === item,
    );
    if (!gpu) {
      throw new WorkerError(
        'CONFIG_INVALID',
        `--gpus names GPU ${item}, which nvidia-smi does not list (it lists ${found.map((g) => `${g.index} ${g.uuid}`).join(', ') || 'none'})`,
      );
    }
    if (!pool.includes(gpu)) pool.push(gpu);
  }
  return pool;
}

export interface GpuDemand {
  learnParallelism: number;
  learnGpus: number;
  predictParallelism: number;
  predictGpus: number;
}

export function gpusNeeded(d: GpuDemand): number {
  return d.learnParallelism * d.learnGpus + d.predictParallelism * d.predictGpus;
}

/** Refuses a pool that cannot serve every task slot at once: a task never waits for a GPU. */
export function checkCapacity(pool: readonly Gpu[], d: GpuDemand): void {
  const needed = gpusNeeded(d);
  if (needed <= pool.length) return;
  throw new WorkerError(
    'CONFIG_INVALID',
    `the GPU pool has ${pool.length} GPU(s), but --learn-parallelism ${d.learnParallelism} × --learn-gpus ${d.learnGpus} + --predict-parallelism ${d.predictParallelism} × --predict-gpus ${d.predictGpus} needs ${needed}`,
    {
      hint: 'give this worker more GPUs with --gpus, or lower the parallelism or the GPUs per task',
    },
  );
}

/** GPUs one task holds; release is safe to call twice. */
export interface GpuLease {
  readonly gpus: readonly Gpu[];
  release(): void;
}

/** Exclusive GPUs per task: no two leases ever share one. */
export class GpuPool {
  private readonly busy = new Set<string>();

  constructor(readonly gpus: readonly Gpu[]) {}

  get free(): number {
    return this.gpus.length - this.busy.size;
  }

  get inUse(): number {
    return this.busy.size;
  }

  /** Takes `count` free GPUs, lowest index first; throws when too few are free. */
  acquire(count: number): GpuLease {
    if (count === 0) return { gpus: [], release: () => {} };
    const taken = this.gpus.filter((g) => !this.busy.has(g.uuid)).slice(0, count);
    if (taken.length < count) {
      throw new WorkerError(
        'INTERNAL',
        `a task needs ${count} GPU(s) but only ${taken.length} of the pool's ${this.gpus.length} are free`,
        { retryable: true },
      );
    }
    for (const g of taken) this.busy.add(g.uuid);
    let released = false;
    return {
      gpus: taken,
      release: () => {
        if (released) return;
        released = true;
        for (const g of taken) this.busy.delete(g.uuid);
      },
    };
  }
}
