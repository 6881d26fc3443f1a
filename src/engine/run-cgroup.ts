import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cgroupMounts, removeCgroupFolders } from '../build/cgroup.js';
import type { ContainerUsage, EngineInfo } from './types.js';

/** Every task container's parent cgroup lives under this folder at the root of each hierarchy. */
export const RUN_CGROUP_ROOT = 'compute-worker-run';
const CGROUP_FS = '/sys/fs/cgroup';

/**
 * A parent cgroup the container is created under (--cgroup-parent), so that what it used
 * can be read once it has ended: the engine removes the container's own cgroup, with its
 * counters, the moment it exits, but a parent's CPU time and memory peak count every
 * child, the removed ones too. Only the container is in it: podman's conmon is kept out
 * (--cgroups=no-conmon), docker's shim lives elsewhere anyway.
 */
export interface RunCgroup {
  /** The path given to the engine as --cgroup-parent. */
  readonly parent: string;
  /** Takes one sample while the container runs (the memory peak where the kernel keeps none). */
  sample(): Promise<void>;
  /** What the container used, read once it has ended; a figure that cannot be read is left out. */
  read(): Promise<ContainerUsage>;
  /** Removes the parent's folders in every hierarchy (the container's own are gone by then). */
  remove(): Promise<void>;
}

type Files =
  | { version: 1; cpuacct: string; memory: string }
  | { version: 2; dir: string; peak: boolean };

/**
 * A parent cgroup for one container, or undefined where the worker cannot read cgroups
 * of the engine's containers: a remote or rootless engine (rootless podman on cgroup v1
 * has no cgroup per container at all), a worker that is not root, podman with the
 * systemd cgroup manager (which takes only slices as parents), docker.
 */
export async function createRunCgroup(
  info: Pick<EngineInfo, 'name' | 'rootless' | 'engineHost' | 'cgroupManager'>,
  owner = 'worker',
): Promise<RunCgroup | undefined> {
  if (process.getuid?.() !== 0 || info.rootless || info.engineHost) return undefined;
  // Docker's systemd cgroup driver takes only slices too, and `docker info` here does not
  // say which driver runs: docker containers are not measured yet.
  if (info.name !== 'podman' || info.cgroupManager !== 'cgroupfs') return undefined;
  const relative = `${RUN_CGROUP_ROOT}/${owner}-${randomBytes(6).toString('hex')}`;
  const files = await filesOf(relative);
  if (!files) return undefined;
  return runCgroupAt(relative, files);
}

export function runCgroupAt(relative: string, files: Files): RunCgroup {
  let polledPeak: number | undefined;
  return {
    parent: `/${relative}`,
    async sample() {
      if (files.version !== 2 || files.peak) return;
      const now = await readNumber(join(files.dir, 'memory.current'));
      if (now !== undefined) polledPeak = Math.max(polledPeak ?? 0, now);
    },
    async read() {
      if (files.version === 1) {
        const ns = await readNumber(join(files.cpuacct, 'cpuacct.usage'));
        const peak = await readNumber(join(files.memory, 'memory.max_usage_in_bytes'));
        return usage(ns === undefined ? undefined : ns / 1e9, peak);
      }
      const stat = await readFile(join(files.dir, 'cpu.stat'), 'utf8').catch(() => '');
      const usec = /^usage_usec (\d+)$/m.exec(stat)?.[1];
      const peak = files.peak
        ? await readNumber(join(files.dir, 'memory.peak'))
        : // memory.peak came with Linux 5.19: before, the peak is the highest sample.
          polledPeak;
      return usage(usec === undefined ? undefined : Number(usec) / 1e6, peak);
    },
    remove: () => removeCgroupFolders(relative),
  };
}

/**
 * Removes the parents of containers that a killed worker `owner` left, once their
 * containers are gone: an empty cgroup is all they are then.
 */
export async function removeRunCgroupsOf(owner: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const roots = await readdir(CGROUP_FS).catch(() => [] as string[]);
  const names = new Set<string>();
  for (const root of ['', ...roots]) {
    const dir = join(CGROUP_FS, root, RUN_CGROUP_ROOT);
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (name.startsWith(`${owner}-`)) names.add(name);
    }
  }
  for (const name of names) {
    await removeCgroupFolders(`${RUN_CGROUP_ROOT}/${name}`).catch(() => undefined);
  }
}

/** Where the counters of `relative` will be, once the runtime has made it. */
async function filesOf(relative: string): Promise<Files | undefined> {
  const mounts = await cgroupMounts();
  if (!mounts) return undefined;
  const cpuacct = mounts.v1('cpuacct');
  const memory = mounts.v1('memory');
  if (cpuacct && memory) {
    return { version: 1, cpuacct: join(cpuacct, relative), memory: join(memory, relative) };
  }
  if (!mounts.v2) return undefined;
  // A kernel that keeps the peak has memory.peak in the root's children: look at one's.
  const peak = await hasPeakFile();
  return { version: 2, dir: join(CGROUP_FS, relative), peak };
}

async function hasPeakFile(): Promise<boolean> {
  const entries = await readdir(CGROUP_FS, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    if (!entry.isDirectory()) continue;
    const files = await readdir(join(CGROUP_FS, entry.name)).catch(() => [] as string[]);
    if (files.includes('memory.current')) return files.includes('memory.peak');
  }
  return false;
}

async function readNumber(file: string): Promise<number | undefined> {
  const text = await readFile(file, 'utf8').catch(() => undefined);
  const value = text === undefined ? Number.NaN : Number(text.trim());
  return Number.isFinite(value) ? value : undefined;
}

function usage(cpuSeconds: number | undefined, peak: number | undefined): ContainerUsage {
  return {
    ...(cpuSeconds !== undefined ? { cpuSeconds } : {}),
    ...(peak !== undefined && peak > 0 ? { peakMemoryBytes: peak } : {}),
  };
}
