import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readlink, rm, stat, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type StateLock, waitForStateLock } from '../config/state-lock.js';
import {
  imageIdArgs,
  imageOriginArgs,
  pushToStoreArgs,
  type StoreSpec,
  storeArgs,
  unshareRemoveArgs,
  untagAllArgs,
} from '../engine/args.js';
import { type EngineContext, transferTimeoutMs } from '../engine/context.js';
import { capDetail, engineFailure, execEngineRaw } from '../engine/exec.js';
import { LABEL_BUILT_BY } from '../engine/labels.js';
import { WorkerError } from '../errors.js';
import { copyImage } from './base-images.js';
import { type FolderOwner, handedDirs, mkdirAs, removeTree } from './owned-dirs.js';
import { hasTransport } from './policy.js';
import { type BuildUser, buildUserCli, storagePaths } from './user.js';

export type { FolderOwner } from './owned-dirs.js';

/** The uid a build's engine runs as: the folders' owner, or the worker's own. */
export function engineUid(owner: FolderOwner | undefined): number {
  return owner?.uid ?? process.getuid?.() ?? 0;
}

/**
 * The user a local rootless engine runs as, when it is not the worker's own (a worker run
 * as root with a wrapper that runs podman as another user): the owner of its default store.
 */
export async function rootlessOwner(ctx: EngineContext): Promise<FolderOwner | undefined> {
  if (!ctx.info.rootless) return undefined;
  const paths = await storagePaths(ctx.cli, ctx.options.callTimeoutMs);
  const { uid, gid } = await stat(paths.graphRoot);
  return uid === process.getuid?.() ? undefined : { uid, gid };
}

/** Where builds' folders go: buildah's default temp place. */
export const ENGINE_TMP_BASE = '/var/tmp';
/** The store of approved base images, next to its owner's default store (see baseStoreFor). */
const BASES_NAME = 'compute-worker-bases';
/** The names of the images the worker builds (see build.ts). */
const BUILT_PREFIX = 'localhost/compute-worker/';
/**
 * Where the locks of an engine user's base stores are (several workers share each): a
 * folder of root's, never one of that user's.
 */
const OWNERS_LOCKS = '/run/compute-worker';
/** Held while a built image is copied into the host's store (beside it). */
const MOVES_LOCK = 'compute-worker-moves.lock';

/**
 * The base images untrusted builds start FROM, copied once from the host's store and kept:
 * every build's own store sees it read-only. It never holds a built image.
 */
export interface BaseStore {
  spec: StoreSpec;
  /** The podman that writes it (the build user's, or the host's), pointed at it. */
  owner: EngineContext;
  /** Held while images are copied in: several workers of one host share the store. */
  lockDir: string;
  /** Where `podman load` spools an image on its way in (not a build's: not counted against it). */
  tmp: string;
}

/**
 * The base store of the build user (beside its default store, in its own namespace's ids)
 * or, without one, of the host's podman (beside the host's store); its folders made unless
 * `make` is false (doctor only looks).
 */
export async function baseStoreFor(
  ctx: EngineContext,
  user?: BuildUser,
  { make = true }: { make?: boolean } = {},
): Promise<BaseStore> {
  const owner = user ?? (await rootlessOwner(ctx));
  const cli = user ? buildUserCli(ctx.cli, user) : ctx.cli;
  const paths = await storagePaths(cli, ctx.options.callTimeoutMs);
  const spec: StoreSpec = {
    root: join(dirname(paths.graphRoot), BASES_NAME),
    runRoot: join(dirname(paths.runRoot), BASES_NAME),
    driver: paths.driver,
  };
  const tmp = `${spec.root}-tmp`;
  // A build's store names the base store as an image store: it must be there before the
  // first base is copied in (a FROM scratch build on a new host). The owner's folders are
  // made by the owner; its lock (and what the worker writes there) in a folder of root's.
  const lockDir = owner
    ? join(
        OWNERS_LOCKS,
        `bases-${createHash('sha256').update(spec.root).digest('hex').slice(0, 16)}.lock`,
      )
    : `${spec.root}.lock`;
  if (make && owner) await mkdirAs(owner, [spec.root, tmp]);
  else if (make)
    for (const dir of [spec.root, tmp]) await mkdir(dir, { recursive: true, mode: 0o700 });
  if (make) await mkdir(lockDir, { recursive: true, mode: 0o700 });
  return {
    spec,
    owner: {
      cli: { ...cli, globalArgs: storeArgs(spec) },
      info: {
        ...ctx.info,
        rootless: paths.rootless,
        graphRoot: spec.root,
        runRoot: spec.runRoot,
        storageDriver: spec.driver,
      },
      options: ctx.options,
    },
    lockDir,
    tmp,
  };
}

/**
 * Makes the base store hold each image as the host's store has it (by ID): one it lacks,
 * or holds another image under that name, is copied in, under the store's lock. An image
 * the host does not have is refused, so a copy kept from before is never built upon.
 */
export async function syncBases(
  host: EngineContext,
  bases: BaseStore,
  images: readonly string[],
  signal?: AbortSignal,
): Promise<void> {
  const missing: string[] = [];
  for (const image of images) {
    const hostId = await approvedBase(host, image, signal);
    if (!(await holds(bases, image, hostId, signal))) missing.push(image);
  }
  if (missing.length > 0) await copyMissing(host, bases, missing, signal);
}

async function copyMissing(
  host: EngineContext,
  bases: BaseStore,
  missing: readonly string[],
  signal?: AbortSignal,
): Promise<void> {
  const call = { timeoutMs: host.options.callTimeoutMs, signal };
  const lock = await takeLock(bases.lockDir, transferTimeoutMs(host.options), signal);
  try {
    for (const image of missing) {
      const hostId = (await execEngineRaw(host.cli, imageIdArgs(image), call)).stdout.trim();
      // Another worker may have copied it while this one waited for the lock.
      const held = await heldId(bases, image, signal);
      if (held === hostId) continue;
      if (held) await forgetStale(bases, held, signal);
      await copyBase(host, bases, image, signal);
      if (!(await holds(bases, image, hostId, signal))) {
        throw new WorkerError(
          'ENGINE_FAILED',
          `FROM ${image}: the base store does not give the host's image for that name after copying it`,
          { retryable: true },
        );
      }
    }
  } finally {
    lock.release();
  }
}

/**
 * The host image a base name stands for, by ID, when it may be a base: never one the worker
 * built (its names, its label), nor one found by the start of its ID (podman resolves a hex
 * word so), whatever the policy let through: the base store must never hold a built image.
 */
async function approvedBase(host: EngineContext, image: string, signal?: AbortSignal) {
  const call = { timeoutMs: host.options.callTimeoutMs, signal };
  const found = await execEngineRaw(host.cli, imageOriginArgs(image), call);
  if (found.exitCode !== 0) {
    throw new WorkerError('BUILD_FAILED', `FROM ${image}: there is no such image on this host`, {
      detail: capDetail(found.outputTail),
      hint: 'a submission may start only FROM images the operator has put on the worker host',
    });
  }
  const [id = '', names = 'null', labels = 'null', volumes = 'null'] = found.stdout
    .trim()
    .split('\t');
  const tags = (JSON.parse(names) as string[] | null) ?? [];
  const keys = Object.keys((JSON.parse(labels) as Record<string, string> | null) ?? {});
  const byId = id.startsWith(image.replace(/^sha256:/, '').toLowerCase()) || hasTransport(image);
  if (byId || tags.some((tag) => tag.startsWith(BUILT_PREFIX)) || keys.includes(LABEL_BUILT_BY)) {
    throw new WorkerError(
      'BUILD_CONTEXT_REJECTED',
      `FROM ${image}: not a base image the operator put on this host (an image this worker built, an image ID or a transport)`,
      { hint: 'start FROM a base image by its name' },
    );
  }
  // buildah gives each VOLUME of the base a folder of the build's own, where a RUN step
  // writes unmeasured; the image it makes would be refused for it anyway (build.ts).
  const declared = Object.keys((JSON.parse(volumes) as Record<string, unknown> | null) ?? {});
  if (declared.length > 0) {
    throw new WorkerError(
      'BUILD_CONTEXT_REJECTED',
      `FROM ${image}: the base image declares VOLUME ${declared.slice(0, 5).join(', ')}: a submission image may not`,
      { hint: 'start FROM a base image without VOLUME instructions' },
    );
  }
  return id;
}

async function holds(
  bases: BaseStore,
  image: string,
  id: string,
  signal?: AbortSignal,
): Promise<boolean> {
  return (await heldId(bases, image, signal)) === id;
}

/** The ID of the image the base store gives for the name, if any. */
async function heldId(
  bases: BaseStore,
  image: string,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const call = { timeoutMs: bases.owner.options.callTimeoutMs, signal };
  const found = await execEngineRaw(bases.owner.cli, imageIdArgs(image), call);
  const id = found.stdout.trim();
  return found.exitCode === 0 && /^[0-9a-f]{64}$/.test(id) ? id : undefined;
}

/**
 * An image the name stood for once, and the host no longer has under it (removed, or
 * another image named so): its names go, or the base store, and buildah looking in it,
 * would go on resolving the name to it. The image itself stays until no build can be
 * reading it: a sibling's build may be.
 */
async function forgetStale(bases: BaseStore, id: string, signal?: AbortSignal) {
  const call = { timeoutMs: bases.owner.options.callTimeoutMs, signal };
  const untagged = await execEngineRaw(bases.owner.cli, untagAllArgs(id), call);
  if (untagged.exitCode !== 0)
    throw engineFailure('podman untag', untagged.exitCode, untagged.outputTail);
}

async function copyBase(
  host: EngineContext,
  bases: BaseStore,
  image: string,
  signal?: AbortSignal,
): Promise<void> {
  try {
    await copyImage(host, bases.owner, image, bases.tmp, signal);
  } catch (error) {
    if (!(error instanceof WorkerError) || !/insufficient UIDs or GIDs/.test(error.detail ?? '')) {
      throw error;
    }
    throw new WorkerError(
      'BUILD_FAILED',
      `FROM ${image}: the image has files owned by ids that the build user's namespace cannot hold`,
      {
        detail: error.detail,
        hint: 'give the build user a larger subordinate range in /etc/subuid and /etc/subgid (then podman system migrate as that user), or use a base image whose files belong to ids below 65536',
      },
    );
  }
}

function takeLock(dir: string, timeoutMs: number, signal?: AbortSignal): Promise<StateLock> {
  return waitForStateLock(dir, {
    deadlineMs: Date.now() + timeoutMs,
    signal,
    cancelled: 'The image build was cancelled',
  });
}

/** A build's own store, in its own folder: it sees only itself and the base store. */
export interface BuildStore {
  spec: StoreSpec;
  /** The base store it sees. */
  bases: BaseStore;
  /** The engine that builds, pointed at the build's store. */
  engine: EngineContext;
  /** The host's engine pointed at the same store: it copies the built image out. */
  mover: EngineContext;
}

/**
 * podman refuses a run root longer than 50 characters: a build's is a short link to the
 * folder `run` of its store, made by makeRunRootLink and removed with the build.
 */
export const RUN_ROOT_LINK_PREFIX = join(ENGINE_TMP_BASE, 'cw-run-');

/**
 * The short link to the build's run folder, which is made (owned by `user` when given).
 * Named after the folder: podman's database keeps the run root it was made with, and a
 * restart reaching a dead build's store must give the same one.
 */
export async function makeRunRootLink(dir: string, user?: FolderOwner): Promise<string> {
  const target = join(dir, 'store', 'run');
  // `dir` is the worker's: its store folder is made there, then handed over.
  await handedDirs([join(dir, 'store'), target], user);
  const link = `${RUN_ROOT_LINK_PREFIX}${createHash('sha256').update(dir).digest('hex').slice(0, 16)}`;
  // /var/tmp is everyone's: a link another user made there under this name, even one that
  // points right, is that user's to repoint later.
  const made = await lstat(link).catch(() => undefined);
  const ours = made?.isSymbolicLink() && made.uid === (process.getuid?.() ?? 0);
  if (ours && (await readlink(link).catch(() => undefined)) === target) return link;
  await rm(link, { force: true });
  await symlink(target, link);
  return link;
}

/**
 * Removes the run root links of the given build folders, and links whose folder is gone
 * (no build's any more: a worker killed between removing a folder and its link).
 */
export async function removeRunRootLinks(folders: readonly string[]): Promise<void> {
  const base = dirname(RUN_ROOT_LINK_PREFIX);
  const prefix = RUN_ROOT_LINK_PREFIX.slice(base.length + 1);
  for (const name of await readdir(base).catch(() => [] as string[])) {
    if (!name.startsWith(prefix)) continue;
    const link = join(base, name);
    const target = await readlink(link).catch(() => undefined);
    if (target === undefined) continue;
    const gone = !existsSync(target) || folders.some((dir) => target.startsWith(`${dir}/`));
    if (gone) await rm(link, { force: true });
  }
}

/** The store of a build whose folder is `dir` (made by `builder`'s user, removed with the folder). */
export function buildStoreIn(
  host: EngineContext,
  builder: EngineContext,
  dir: string,
  bases: BaseStore,
  runRoot: string,
): BuildStore {
  const spec: StoreSpec = {
    root: join(dir, 'store', 'root'),
    runRoot,
    driver: bases.spec.driver,
    imageStores: [bases.spec.root],
  };
  const pointed = (ctx: EngineContext): EngineContext => ({
    cli: { ...ctx.cli, globalArgs: storeArgs(spec) },
    info: {
      ...ctx.info,
      graphRoot: spec.root,
      runRoot: spec.runRoot,
      storageDriver: spec.driver,
      imageStores: spec.imageStores,
    },
    options: ctx.options,
  });
  return { spec, bases, engine: pointed(builder), mover: pointed(host) };
}

/**
 * Copies the built image from the build's store into the host's, where tasks run it:
 * only the layers the build added (the base's are the host's already). A file keeps the
 * owner it has in the image: a layer is read back as the tar it was committed from.
 * Moves into one host's store take turns: a worker that built the same context at the same
 * time finds the name there and leaves it, so no image is left without a name.
 */
export async function moveBuiltImage(
  store: BuildStore,
  host: EngineContext,
  image: string,
  signal?: AbortSignal,
): Promise<void> {
  const call = { timeoutMs: host.options.callTimeoutMs, signal };
  // The host's store as the engine's detection saw it (no call), else asked.
  const { graphRoot, runRoot, storageDriver } = host.info;
  const paths =
    graphRoot && runRoot && !host.cli.globalArgs?.length
      ? { graphRoot, runRoot, driver: storageDriver }
      : await storagePaths(host.cli, host.options.callTimeoutMs);
  const to: StoreSpec = { root: paths.graphRoot, runRoot: paths.runRoot, driver: paths.driver };
  const timeoutMs = transferTimeoutMs(host.options);
  const lockDir = join(dirname(paths.graphRoot), MOVES_LOCK);
  await mkdir(lockDir, { recursive: true, mode: 0o700 });
  const lock = await takeLock(lockDir, timeoutMs, signal);
  try {
    if ((await execEngineRaw(host.cli, imageIdArgs(image), call)).exitCode === 0) return;
    const pushed = await execEngineRaw(store.mover.cli, pushToStoreArgs(image, to), {
      timeoutMs,
      signal,
    });
    if (pushed.cancelled) throw new WorkerError('CANCELLED', 'The image build was cancelled');
    if (pushed.timedOut) {
      throw new WorkerError(
        'ENGINE_FAILED',
        `Moving the built image did not finish within ${timeoutMs} ms`,
        { retryable: true },
      );
    }
    if (pushed.exitCode !== 0) {
      throw engineFailure('podman push', pushed.exitCode, pushed.outputTail);
    }
  } finally {
    lock.release();
  }
}

/**
 * Removes a build's folder with its store. A rootless engine's layers hold files of its
 * subordinate ids, which only its user namespace may remove: the engine removes the store
 * there first (the worker may be that unprivileged user).
 */
export async function removeBuildFolder(
  engine: EngineContext | undefined,
  dir: string,
): Promise<void> {
  const store = join(dir, 'store');
  if (engine?.info.rootless && existsSync(store) && process.getuid?.() !== 0) {
    // Not pointed at the store it removes.
    const cli = { ...engine.cli, globalArgs: undefined };
    await execEngineRaw(cli, unshareRemoveArgs(store), {
      timeoutMs: engine.options.callTimeoutMs,
    });
  }
  // The engine user's folders in it may be changing while they go (see owned-dirs.ts).
  await removeTree(dir);
}
