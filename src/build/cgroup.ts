import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BuildLimits } from '../engine/types.js';

/** Every build's cgroup lives under this folder at the root of each hierarchy. */
export const BUILD_CGROUP_ROOT = 'compute-worker-build';
const CGROUP_FS = '/sys/fs/cgroup';
const CFS_PERIOD_US = 100_000;
const KILL_ROUNDS = 200;

/**
 * A cgroup the worker creates for one build, laid out as
 *   <root>/compute-worker-build/<id>/engine         the `podman build` process and its helpers
 *   <root>/compute-worker-build/<id>/limited        the limits (pids, memory without swap, cpu)
 *   <root>/compute-worker-build/<id>/limited/run    --cgroup-parent: runc puts every RUN here
 * runc removes the leaf it was given after each step (with whatever limits it held), so
 * the limits sit one level up, where they bound every descendant. Killing the build kills
 * every process under <id>: the engine CLI, its runtime helpers and every RUN process,
 * which a signal to the CLI alone never reaches.
 */
export interface BuildCgroup {
  /** The path given to the engine as --cgroup-parent. */
  readonly runParent: string;
  /** Moves the engine CLI (just started, no children yet) into the build's cgroup. */
  enter(pid: number): void;
  /**
   * Moves the engine CLI under the limits instead, with everything it starts: a rootless
   * engine cannot put its RUN steps into --cgroup-parent, they stay in its own cgroup.
   */
  enterLimited(pid: number): void;
  /** SIGKILLs every process of the build until none is left; returns how many were killed. */
  killAll(): Promise<number>;
  /** True when a RUN step hit the memory limit (the kernel had to refuse or reclaim memory). */
  hitMemoryLimit(): Promise<boolean>;
  /** Kills what is left, then removes the cgroup folders. */
  remove(): Promise<void>;
}

type Layout = { version: 1; pids: string; memory: string; cpu: string } | { version: 2 };

/**
 * Creates the build's cgroup, or returns undefined where the worker cannot manage cgroups
 * itself (not root, a read-only or missing cgroup tree, a needed v1 controller missing).
 */
export async function createBuildCgroup(
  limits: BuildLimits,
  id = randomBytes(8).toString('hex'),
): Promise<BuildCgroup | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const layout = await detectLayout();
  if (!layout) return undefined;
  const relative = `${BUILD_CGROUP_ROOT}/${id}`;
  try {
    return layout.version === 1
      ? await createV1(layout, relative, limits)
      : await createV2(relative, limits);
  } catch {
    await removeTree(layout, relative).catch(() => undefined);
    return undefined;
  }
}

/**
 * Kills every process of the build cgroups whose id starts with `prefix` and removes them:
 * the builds a worker left running when it was killed (its builds' ids start with its id).
 * Returns their ids.
 */
export async function removeBuildCgroupsOf(prefix: string): Promise<string[]> {
  if (process.getuid?.() !== 0) return [];
  const layout = await detectLayout();
  if (!layout) return [];
  // On v1 every process of a build is in the pids hierarchy (the engine CLI was put there,
  // and runc places RUN steps in every hierarchy): its tree there holds them all.
  const base = join(layout.version === 2 ? CGROUP_FS : layout.pids, BUILD_CGROUP_ROOT);
  const ids = (await subdirs(base)).filter((id) => id.startsWith(prefix));
  for (const id of ids) {
    const dir = join(base, id);
    if (layout.version === 2) await writeFile(join(dir, 'cgroup.kill'), '1').catch(() => undefined);
    await killTree(dir);
    await removeTree(layout, `${BUILD_CGROUP_ROOT}/${id}`);
  }
  return ids;
}

/** Removes the folders of a cgroup the runtime made under `relative` (no process is killed). */
export async function removeCgroupFolders(relative: string): Promise<void> {
  const layout = await detectLayout();
  if (layout) await removeTree(layout, relative);
}

/** The cgroup hierarchies this host mounts: a v1 controller's mount point, and whether v2 is at the root. */
export async function cgroupMounts(): Promise<
  { v1(controller: string): string | undefined; v2: boolean } | undefined
> {
  let mounts: string[][];
  try {
    mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' '));
  } catch {
    return undefined;
  }
  return {
    v1: (controller) =>
      mounts.find((m) => m[2] === 'cgroup' && (m[3] ?? '').split(',').includes(controller))?.[1],
    v2: mounts.some((m) => m[1] === CGROUP_FS && m[2] === 'cgroup2'),
  };
}

async function detectLayout(): Promise<Layout | undefined> {
  const mounts = await cgroupMounts();
  if (!mounts) return undefined;
  const pids = mounts.v1('pids');
  const memory = mounts.v1('memory');
  const cpu = mounts.v1('cpu');
  if (pids && memory && cpu) return { version: 1, pids, memory, cpu };
  return mounts.v2 ? { version: 2 } : undefined;
}

async function createV1(
  layout: Extract<Layout, { version: 1 }>,
  relative: string,
  limits: BuildLimits,
): Promise<BuildCgroup> {
  const limited = (root: string) => join(root, relative, 'limited');
  await mkdir(join(layout.pids, relative, 'engine'), { recursive: true });
  for (const root of [layout.pids, layout.memory, layout.cpu]) {
    await mkdir(limited(root), { recursive: true });
  }
  await writeFile(join(limited(layout.pids), 'pids.max'), String(limits.pidsLimit));
  // The limit first: memsw may never be below it.
  await writeFile(
    join(limited(layout.memory), 'memory.limit_in_bytes'),
    String(limits.memoryBytes),
  );
  await writeFile(
    join(limited(layout.memory), 'memory.memsw.limit_in_bytes'),
    String(limits.memoryBytes),
  ).catch(
    () => undefined, // a kernel without swap accounting: there is no swap to limit
  );
  await writeFile(join(limited(layout.cpu), 'cpu.cfs_period_us'), String(CFS_PERIOD_US));
  await writeFile(
    join(limited(layout.cpu), 'cpu.cfs_quota_us'),
    String(Math.max(1000, Math.round(limits.cpus * CFS_PERIOD_US))),
  );
  const pidsRoot = join(layout.pids, relative);
  const memoryLimited = limited(layout.memory);
  return {
    runParent: `/${relative}/limited/run`,
    enter: (pid) => writeFileSync(join(pidsRoot, 'engine', 'cgroup.procs'), String(pid)),
    enterLimited(pid) {
      for (const root of [layout.pids, layout.memory, layout.cpu]) {
        const dir = join(limited(root), 'engine');
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'cgroup.procs'), String(pid));
      }
    },
    killAll: () => killTree(pidsRoot),
    async hitMemoryLimit() {
      // On v1 failcnt stays 0 and oom_kill is counted only in runc's leaf, which runc
      // removes: the peak usage reaching the limit is what is left to read.
      for (const file of ['memory.max_usage_in_bytes', 'memory.memsw.max_usage_in_bytes']) {
        const peak = await readFile(join(memoryLimited, file), 'utf8').catch(() => '0');
        if (Number(peak.trim()) >= limits.memoryBytes * 0.95) return true;
      }
      return false;
    },
    async remove() {
      await killTree(pidsRoot);
      await removeTree(layout, relative);
    },
  };
}

async function createV2(relative: string, limits: BuildLimits): Promise<BuildCgroup> {
  const base = join(CGROUP_FS, relative);
  await mkdir(join(base, 'engine'), { recursive: true });
  await mkdir(join(base, 'limited'), { recursive: true });
  // Controllers must be enabled from the root down to the cgroup that sets the limits.
  const parts = relative.split('/');
  for (let i = 0; i <= parts.length; i++) {
    const dir = join(CGROUP_FS, ...parts.slice(0, i));
    await writeFile(join(dir, 'cgroup.subtree_control'), '+pids +memory +cpu');
  }
  const limited = join(base, 'limited');
  await writeFile(join(limited, 'cgroup.subtree_control'), '+pids +memory +cpu');
  await writeFile(join(limited, 'pids.max'), String(limits.pidsLimit));
  await writeFile(join(limited, 'memory.max'), String(limits.memoryBytes));
  await writeFile(join(limited, 'memory.swap.max'), '0').catch(() => undefined);
  const quota = Math.max(1000, Math.round(limits.cpus * CFS_PERIOD_US));
  await writeFile(join(limited, 'cpu.max'), `${quota} ${CFS_PERIOD_US}`);
  return {
    runParent: `/${relative}/limited/run`,
    enter: (pid) => writeFileSync(join(base, 'engine', 'cgroup.procs'), String(pid)),
    enterLimited(pid) {
      // A leaf below the limits: v2 puts no process into a cgroup that has children.
      mkdirSync(join(limited, 'engine'), { recursive: true });
      writeFileSync(join(limited, 'engine', 'cgroup.procs'), String(pid));
    },
    async killAll() {
      // cgroup.kill (Linux 5.14) kills the whole subtree at once, forks included.
      await writeFile(join(base, 'cgroup.kill'), '1').catch(() => undefined);
      return killTree(base);
    },
    async hitMemoryLimit() {
      const events = await readFile(join(limited, 'memory.events'), 'utf8').catch(() => '');
      return /^(oom|oom_kill|max) [1-9]/m.test(events);
    },
    async remove() {
      await writeFile(join(base, 'cgroup.kill'), '1').catch(() => undefined);
      await killTree(base);
      await removeTree({ version: 2 }, relative);
    },
  };
}

/**
 * SIGKILLs every process in the cgroup and its descendants, again and again until none
 * is left: a fork between reading cgroup.procs and the kill lands in the cgroup too, and
 * the pids limit bounds how many there can be.
 */
async function killTree(root: string): Promise<number> {
  let killed = 0;
  for (let round = 0; round < KILL_ROUNDS; round++) {
    const pids = await treeProcs(root);
    if (pids.length === 0) return killed;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed++;
      } catch {
        // already gone
      }
    }
    await sleep(round < 10 ? 10 : 50);
  }
  return killed;
}

async function treeProcs(dir: string): Promise<number[]> {
  const own = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  const pids = own.split('\n').filter(Boolean).map(Number);
  for (const child of await subdirs(dir)) pids.push(...(await treeProcs(join(dir, child))));
  return pids;
}

async function subdirs(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true }))
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name);
  } catch {
    return [];
  }
}

/** Removes the build's cgroup folders, deepest first, in every hierarchy runc may have used. */
async function removeTree(layout: Layout, relative: string): Promise<void> {
  const roots =
    layout.version === 2
      ? [CGROUP_FS]
      : (await subdirs(CGROUP_FS)).map((name) => join(CGROUP_FS, name));
  for (const root of roots) await removeDir(join(root, relative));
}

async function removeDir(dir: string): Promise<void> {
  for (const child of await subdirs(dir)) await removeDir(join(dir, child));
  // A cgroup whose last process just died can be busy for a moment.
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw error;
      await sleep(50);
    }
  }
}
