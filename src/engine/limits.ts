import { availableParallelism } from 'node:os';
import type { RunLimits } from './types.js';

const GIB = 1024 ** 3;

/**
 * Limits of a submission's container when the operator sets none. Every one is finite:
 * untrusted code never runs "unlimited". nproc counts every process of the container's
 * uid on the host (rootful), so it is set above the per-container pids limit.
 */
export const DEFAULT_LIMITS: RunLimits = {
  memoryBytes: 4 * GIB,
  cpus: Math.min(1, availableParallelism()),
  pidsLimit: 256,
  tmpfsBytes: 1 * GIB,
  shmBytes: 1 * GIB,
  user: '1000:1000',
  nofile: 1024,
  nproc: 1024,
};
