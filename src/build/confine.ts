import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { formatSize } from '../config/size.js';
import type { BuildIsolation } from '../engine/args.js';
import type { EngineContext } from '../engine/context.js';
import type { ExecResult } from '../engine/exec.js';
import { DEFAULT_LIMITS } from '../engine/limits.js';
import type { BuildLimits } from '../engine/types.js';
import { WorkerError } from '../errors.js';
import { type BuildCgroup, createBuildCgroup } from './cgroup.js';
import { removeBuildLeftovers } from './leftovers.js';
import { handedDirs, removeTree } from './owned-dirs.js';
import { reapIdlePauses } from './pause.js';
import {
  type BuildStore,
  baseStoreFor,
  buildStoreIn,
  ENGINE_TMP_BASE,
  engineUid,
  makeRunRootLink,
  removeBuildFolder,
  rootlessOwner,
} from './store.js';

export { ENGINE_TMP_BASE };

import { type BuildUser, buildUserContext, findBuildUser } from './user.js';
import { buildIdMaps } from './userns.js';

/** Roles whose build contexts are trusted: the problem's workflow. Any other role is confined. */
const TRUSTED_ROLES = new Set(['workflow']);
/** buildah's words for a RUN step that died by SIGKILL (the memory cgroup's OOM killer): 1.28 says the second. */
const KILLED_STEP = /exit status 137\b|container exited on killed/;

export interface BuildConfinement {
  isolation: BuildIsolation;
  limits: BuildLimits;
  /** The worker's own cgroup of the build: undefined where it cannot make one. */
  cgroup?: BuildCgroup;
  /** The limits sit on the worker's cgroup (rootful podman, cgroupfs), not on engine flags. */
  limitsInCgroup: boolean;
  /** The engine's TMPDIR: buildah's per-step folders, which a killed build leaves, go there. */
  env: Record<string, string>;
  /**
   * The build's own store and temp folder (local podman), in one folder of the build's,
   * removed with it: nothing but the base store is in reach from inside.
   */
  store?: BuildStore;
  /** The TMPDIR of `env`: what buildah writes there (files it bind-mounts into RUN) counts against the disk limit. */
  tmpDir?: string;
  /** Kills what is left of the build and removes its cgroup; after a failure, its working containers. */
  release(ctx: EngineContext, failed: boolean): Promise<void>;
  /** Called with the engine CLI's pid as soon as it started (it enters the build's cgroup). */
  onSpawn?: (pid: number) => void;
  /** The build runs as this unprivileged user's rootless podman (see BuildAsUser). */
  asUser?: BuildAsUser;
}

/** A build by the build user's rootless podman, whose image is then moved to the host's store. */
export interface BuildAsUser {
  user: BuildUser;
  /** Where the context goes, readable by the user (it does not exist yet). */
  contextDir: string;
}

/**
 * A new build's id: the worker's id (EngineOptions.owner), then a random part. The id
 * names the build's cgroup, mark and temp folders, so that a worker restarted after a
 * crash finds the builds it left (orphan-builds.ts).
 */
export function newBuildId(ctx: EngineContext): string {
  const random = randomBytes(8).toString('hex');
  return ctx.options.owner ? `${buildIdPrefix(ctx.options.owner)}${random}` : random;
}

export function buildIdPrefix(owner: string): string {
  return `${owner}.`;
}

/**
 * How an untrusted build is confined on this engine:
 * - rootful podman: RUN steps as root of a user namespace mapped to unprivileged host ids,
 *   a reduced capability set, and a cgroup of the worker's that carries the limits (pids
 *   too, which podman build has no flag for) and that is killed whole at the end;
 * - rootful podman with a build user (--build-user, the default when the user exists):
 *   the user's rootless podman builds, so RUN steps are root of the user's namespace;
 *   the worker's cgroup of the build carries the limits and is killed whole at the end;
 * - rootless podman: already in the user's namespace; no limits on cgroup v1 (see
 *   EngineInfo.unenforcedLimits), but a worker running as root still kills it whole;
 * - docker: memory and CPU through build flags (no pids limit, no capability flags);
 * - a remote podman: as docker, plus the capability set (see remote.ts for what is not enforced).
 */
export async function confineBuild(
  ctx: EngineContext,
  role: string,
  buildId = newBuildId(ctx),
): Promise<BuildConfinement | undefined> {
  if (TRUSTED_ROLES.has(role)) return undefined;
  const asUser = await userBuild(ctx, buildId);
  if (asUser) return asUser;
  const limits = ctx.options.buildLimits ?? {
    memoryBytes: DEFAULT_LIMITS.memoryBytes,
    cpus: DEFAULT_LIMITS.cpus,
    pidsLimit: DEFAULT_LIMITS.pidsLimit,
  };
  const { info } = ctx;
  const podman = info.name === 'podman';
  // An id map only when asked for (--build-userns): buildah 1.28 writes the mapped
  // host ids into the image's layers, so what a build creates would belong to ids like
  // 2000001000 when the image runs.
  const userns = ctx.options.buildUserns;
  const idMaps =
    podman && !info.rootless && userns
      ? await buildIdMaps(userns === 'auto' ? undefined : userns)
      : undefined;
  // A remote engine builds on its own host: no cgroup or folder of this one reaches it.
  const local = !ctx.cli.engineHost;
  const cgroup = podman && local ? await createBuildCgroup(limits, buildId) : undefined;
  const limitsInCgroup = cgroup !== undefined && !info.rootless && info.cgroupManager !== 'systemd';
  const unenforced = new Set(info.unenforcedLimits ?? []);
  // One id names everything of this build: its mark, its cgroup, its temp folder.
  const isolation: BuildIsolation = { mark: buildId };
  if (limitsInCgroup) isolation.cgroupParent = cgroup?.runParent;
  else if (!unenforced.has('memory') && !unenforced.has('cpus')) {
    isolation.limits = { memoryBytes: limits.memoryBytes, cpus: limits.cpus };
  }
  if (idMaps) isolation.idMaps = idMaps;
  // buildah's per-step folders go to the engine's TMPDIR and a killed build leaves them:
  // give it one of the build's own, beside the build's own store. The build's root (a
  // mapped id) must pass through it, so it is 0711 under /var/tmp (buildah's default
  // place), never in a private folder.
  const own = podman && local ? await ownFolder(ctx, buildId) : undefined;
  return {
    onSpawn: cgroup ? (pid) => cgroup.enter(pid) : undefined,
    isolation,
    limits,
    cgroup,
    limitsInCgroup,
    env: own ? { TMPDIR: own.tmp } : {},
    ...(own ? { store: own.store, tmpDir: own.tmp } : {}),
    async release(context, failed) {
      try {
        await cgroup?.remove();
      } finally {
        // A build that succeeded removed its own (--force-rm); a killed one could not.
        await removeThenDelete(failed, own?.store.engine ?? context, isolation.mark, own);
        if (failed && info.rootless && own) await reapIdlePauses(own.uid);
      }
    },
  };
}

/**
 * A build's folder (rootful or rootless local podman): its TMPDIR and its own store, which
 * sees the engine's base store. A rootless engine that runs as another user than the
 * worker is given the folders it writes.
 */
async function ownFolder(
  ctx: EngineContext,
  buildId: string,
): Promise<{ dir: string; tmp: string; link: string; store: BuildStore; uid: number }> {
  const dir = await mkdtemp(join(ENGINE_TMP_BASE, `cw-build-tmp-${buildId}-`));
  let link: string | undefined;
  try {
    await chmod(dir, 0o711);
    const owner = await rootlessOwner(ctx);
    const tmp = join(dir, 'tmp');
    await handedDirs([tmp], owner);
    await chmod(tmp, 0o711);
    const bases = await baseStoreFor(ctx);
    link = await makeRunRootLink(dir, owner);
    return {
      dir,
      tmp,
      link,
      store: buildStoreIn(ctx, ctx, dir, bases, link),
      uid: engineUid(owner),
    };
  } catch (error) {
    if (link) await rm(link, { force: true });
    await removeBuildFolder(ctx, dir);
    throw error;
  }
}

/** The memory limit a failed build ran into, as text for its error; undefined if it did not. */
export async function buildOom(
  confinement: BuildConfinement | undefined,
  result: ExecResult,
): Promise<string | undefined> {
  if (!confinement || result.exitCode === 0 || result.timedOut || result.cancelled)
    return undefined;
  if (!KILLED_STEP.test(result.outputTail)) return undefined;
  const limit = `limit ${formatSize(confinement.limits.memoryBytes)}`;
  if (confinement.limitsInCgroup) {
    return (await confinement.cgroup?.hitMemoryLimit()) ? limit : undefined;
  }
  // Without a cgroup to ask, a RUN step killed by SIGKILL under a memory limit is taken for OOM.
  return confinement.isolation.limits ? limit : undefined;
}

/**
 * The confinement of a build by the build user, or undefined when there is none: not rootful
 * podman, not root, an explicit --build-userns, --build-user none or (auto) no such user.
 */
async function userBuild(
  ctx: EngineContext,
  buildId: string,
): Promise<BuildConfinement | undefined> {
  const { info, options } = ctx;
  // A remote podman builds on its own host, where this host's users mean nothing.
  if (info.name !== 'podman' || info.rootless || options.buildUserns || ctx.cli.engineHost)
    return undefined;
  const setting = options.buildUser ?? 'auto';
  if (setting !== 'none' && process.getuid?.() !== 0) {
    if (setting === 'auto') return undefined;
    throw new WorkerError(
      'CONFIG_INVALID',
      `--build-user ${setting} needs the worker to run as root`,
      {
        hint: "run the worker as root (it starts the build user's podman as that user), or pass --build-user none",
      },
    );
  }
  const user = await findBuildUser(setting);
  if (!user) return undefined;
  const engine = await buildUserContext(ctx, user);
  const limits = options.buildLimits ?? {
    memoryBytes: DEFAULT_LIMITS.memoryBytes,
    cpus: DEFAULT_LIMITS.cpus,
    pidsLimit: DEFAULT_LIMITS.pidsLimit,
  };
  // Root's folders, with the user's inside them: the TMPDIR and the build's store (and
  // later the context). `user` stays root's, so the build user can change nothing in it.
  const hostTmp = await mkdtemp(join(ENGINE_TMP_BASE, `cw-build-tmp-${buildId}-`));
  const userDir = join(hostTmp, 'user');
  const userTmp = join(userDir, 'tmp');
  let store: BuildStore;
  let link: string | undefined;
  try {
    await chmod(hostTmp, 0o711);
    await mkdir(userDir, { mode: 0o711 });
    await chmod(userDir, 0o711);
    await handedDirs([userTmp], user);
    const bases = await baseStoreFor(ctx, user);
    link = await makeRunRootLink(userDir, user);
    store = buildStoreIn(ctx, engine, userDir, bases, link);
  } catch (error) {
    if (link) await rm(link, { force: true });
    await removeTree(hostTmp);
    throw error;
  }
  const cgroup = await createBuildCgroup(limits, buildId);
  return {
    // The mark finds its working containers in the build's store.
    isolation: { mark: buildId },
    limits,
    cgroup,
    limitsInCgroup: cgroup !== undefined,
    env: { TMPDIR: userTmp },
    store,
    tmpDir: userTmp,
    onSpawn: cgroup ? (pid) => cgroup.enterLimited(pid) : undefined,
    asUser: { user, contextDir: join(userDir, 'context') },
    async release(_context, failed) {
      try {
        await cgroup?.remove();
      } finally {
        await removeThenDelete(failed, store.engine, buildId, { dir: hostTmp, link });
        if (failed) await reapIdlePauses(user.uid);
      }
    },
  };
}

/** The working containers a failed build left (they unmount its layers), then its folder. */
async function removeThenDelete(
  failed: boolean,
  engine: EngineContext,
  mark: string,
  own: { dir: string; link?: string } | undefined,
): Promise<void> {
  try {
    if (failed) await removeBuildLeftovers(engine, mark);
  } finally {
    if (own?.link) await rm(own.link, { force: true });
    if (own) await removeBuildFolder(engine, own.dir);
  }
}
