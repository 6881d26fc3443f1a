import { existsSync } from 'node:fs';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { procStatFields } from '../config/proc-stat.js';
import { BUILD_MARK_ARG } from '../engine/args.js';
import type { EngineContext } from '../engine/context.js';
import type { OrphanBuilds } from '../engine/types.js';
import { removeBuildCgroupsOf } from './cgroup.js';
import { buildIdPrefix, ENGINE_TMP_BASE } from './confine.js';
import { removeBuildLeftovers } from './leftovers.js';
import { reapIdlePauses } from './pause.js';
import {
  baseStoreFor,
  buildStoreIn,
  engineUid,
  makeRunRootLink,
  removeBuildFolder,
  removeRunRootLinks,
  rootlessOwner,
} from './store.js';
import { type BuildUser, buildUserContext, findBuildUser } from './user.js';

/**
 * Removes what the untrusted builds of a killed run of worker `owner` left: their processes
 * (in the worker's build cgroups, which no service manager stops with the worker, or found
 * by their mark where the worker made no cgroup), working containers and temp folders.
 * One process at a time holds a worker id (the state folder's lock, or a task exec's run
 * folder's), so once that process is dead every build whose id starts with it is an
 * orphan, and a sibling worker's builds are never seen.
 */
export async function removeOrphanBuilds(ctx: EngineContext, owner: string): Promise<OrphanBuilds> {
  const none = { builds: [], containers: [], folders: [] };
  // A remote engine builds on its own host, out of this one's reach.
  if (ctx.info.name !== 'podman' || ctx.cli.engineHost) return none;
  const prefix = buildIdPrefix(owner);
  const builds = new Set(await removeBuildCgroupsOf(prefix));
  for (const id of await killMarkedTrees(prefix)) builds.add(id);
  const containers = await removeBuildLeftovers(ctx, prefix, 'prefix');
  const user = ctx.info.rootless
    ? undefined
    : await findBuildUser(ctx.options.buildUser ?? 'auto').catch(() => undefined);
  if (user) {
    const userCtx = await buildUserContext(ctx, user);
    containers.push(...(await removeBuildLeftovers(userCtx, prefix, 'prefix')));
  }
  // /var/tmp is everyone's: only a folder the worker made (its own, by mkdtemp) is a
  // dead build's; one another user made under that name is not looked into.
  const folders = await ownFolders(
    (await readdir(ENGINE_TMP_BASE).catch(() => [] as string[]))
      .filter((name) => name.startsWith(`cw-build-tmp-${prefix}`))
      .map((name) => join(ENGINE_TMP_BASE, name)),
  );
  for (const dir of folders) {
    // The build's own store: its working containers first (they hold its layers mounted).
    const store = await storeOfFolder(ctx, dir, user).catch(() => undefined);
    if (store) {
      const removed = await removeBuildLeftovers(store, prefix, 'prefix').catch(() => []);
      containers.push(...removed);
    }
    await removeBuildFolder(ctx, dir);
  }
  await removeRunRootLinks(folders);
  // What cleaning up the dead builds' stores made (see pause.ts).
  if (user) await reapIdlePauses(user.uid);
  if (ctx.info.rootless) {
    await reapIdlePauses(engineUid(await rootlessOwner(ctx)));
  }
  return { builds: [...builds], containers, folders };
}

/** Whether the path is a real folder of the worker's own user, not a link or another's. */
async function isOwnFolder(path: string): Promise<boolean> {
  const info = await lstat(path).catch(() => undefined);
  return info?.isDirectory() === true && info.uid === (process.getuid?.() ?? 0);
}

async function ownFolders(paths: readonly string[]): Promise<string[]> {
  const own: string[] = [];
  for (const path of paths) if (await isOwnFolder(path)) own.push(path);
  return own;
}

/**
 * The engine of the store a build made in its folder (see confine.ts), if it made one:
 * only in a folder `user` of the worker's own, where the build user can have changed
 * nothing but its store.
 */
async function storeOfFolder(
  ctx: EngineContext,
  dir: string,
  user: BuildUser | undefined,
): Promise<EngineContext | undefined> {
  const userDir = join(dir, 'user');
  if (user && (await isOwnFolder(userDir)) && existsSync(join(userDir, 'store', 'root'))) {
    const engine = await buildUserContext(ctx, user);
    const bases = await baseStoreFor(ctx, user);
    const link = await makeRunRootLink(userDir, user);
    return buildStoreIn(ctx, engine, userDir, bases, link).engine;
  }
  if (existsSync(join(dir, 'store', 'root'))) {
    const bases = await baseStoreFor(ctx);
    const link = await makeRunRootLink(dir, await rootlessOwner(ctx));
    return buildStoreIn(ctx, ctx, dir, bases, link).engine;
  }
  return undefined;
}

/**
 * SIGKILLs every `podman build` whose mark starts with the prefix, with all its
 * descendants (its runtime and RUN processes), until none is left. Returns the marks.
 */
async function killMarkedTrees(prefix: string): Promise<string[]> {
  const wanted = `${BUILD_MARK_ARG}=${prefix}`;
  const marks = new Set<string>();
  for (let round = 0; round < 50; round++) {
    const table = await processTable();
    const roots = [...table].filter(([, p]) => markOf(p.args, wanted) !== undefined);
    if (roots.length === 0) break;
    const doomed = new Set<number>();
    const add = (pid: number) => {
      if (doomed.has(pid)) return;
      doomed.add(pid);
      for (const [child, p] of table) if (p.ppid === pid) add(child);
    };
    for (const [pid, p] of roots) {
      marks.add(markOf(p.args, wanted) as string);
      add(pid);
    }
    for (const pid of doomed) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already, or not this user's to kill
      }
    }
    await sleep(100);
  }
  return [...marks];
}

/** The build id of a `podman build` command line passing `--build-arg <wanted>...`. */
function markOf(args: string[], wanted: string): string | undefined {
  if (!args.includes('build')) return undefined;
  const i = args.findIndex(
    (a, k) => k > 0 && args[k - 1] === '--build-arg' && a.startsWith(wanted),
  );
  return i > 0 ? (args[i] as string).slice(BUILD_MARK_ARG.length + 1) : undefined;
}

async function processTable(): Promise<Map<number, { ppid: number; args: string[] }>> {
  const table = new Map<number, { ppid: number; args: string[] }>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const [fields, cmdline] = await Promise.all([
      procStatFields(entry),
      readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => ''),
    ]);
    const ppid = Number(fields?.[1] ?? Number.NaN);
    if (Number.isInteger(ppid)) {
      table.set(Number(entry), { ppid, args: cmdline.split('\0') });
    }
  }
  return table;
}
