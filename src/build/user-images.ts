import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  allImageIdsArgs,
  imageIdArgs,
  imageLoadArgs,
  imageNamesArgs,
  imageSaveArgs,
  removeImageArgs,
  removeUnusedImageArgs,
} from '../engine/args.js';
import { type EngineContext, transferTimeoutMs } from '../engine/context.js';
import {
  capDetail,
  engineFailure,
  execEngineRaw,
  execImageListing,
  spawnEngine,
} from '../engine/exec.js';
import { WorkerError } from '../errors.js';
import { extractFlags, parseContainerfile } from './parse.js';

const STDERR_BYTES = 8 * 1024;
/** The names of the images the worker builds (see build.ts). */
const BUILT_PREFIX = 'localhost/compute-worker/';

/** The images the stages of the context's Containerfiles start FROM, but scratch and earlier stages. */
export async function baseImages(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((name) =>
    ['containerfile', 'dockerfile'].includes(name.toLowerCase()),
  );
  const images = new Set<string>();
  for (const name of names) {
    const stages: string[] = [];
    const parsed = parseContainerfile(await readFile(join(dir, name), 'utf8'));
    for (const { keyword, rest } of parsed.instructions) {
      if (keyword.toUpperCase() !== 'FROM') continue;
      const [image = '', as, stage] = extractFlags(rest)
        .args.split(/[ \t]+/)
        .filter(Boolean);
      // A stage only by its exact name, as buildah matches it: any other spelling is an image.
      const isStage = stages.includes(image);
      if (image.toLowerCase() !== 'scratch' && !isStage && image) images.add(image);
      if (as?.toUpperCase() === 'AS' && stage) stages.push(stage);
    }
  }
  return [...images];
}

/**
 * Gives the build user's store the base images as the host's (rootful) store has them: an
 * image is copied when the user's store lacks it or holds another one under that name.
 * A base image the host does not have is refused here, so a copy the user's store kept
 * from before is never built upon.
 */
export async function syncBaseImages(
  host: EngineContext,
  user: EngineContext,
  images: readonly string[],
  userTmp: string,
  signal?: AbortSignal,
): Promise<void> {
  const call = { timeoutMs: host.options.callTimeoutMs, signal };
  // Housekeeping: a store that is busy for long (another process holding its lock) must not fail the build.
  await pruneUserImages(host, user, signal).catch(() => undefined);
  for (const image of images) {
    const hostId = await execEngineRaw(host.cli, imageIdArgs(image), call);
    if (hostId.exitCode !== 0) {
      throw new WorkerError('BUILD_FAILED', `FROM ${image}: there is no such image on this host`, {
        detail: capDetail(hostId.outputTail),
        hint: 'a submission may start only FROM images the operator has put on the worker host',
      });
    }
    const userId = await execEngineRaw(user.cli, imageIdArgs(image), call);
    if (userId.exitCode === 0 && userId.stdout.trim() === hostId.stdout.trim()) continue;
    try {
      await copyImage(host, user, image, userTmp, signal);
    } catch (error) {
      if (
        !(error instanceof WorkerError) ||
        !/insufficient UIDs or GIDs/.test(error.detail ?? '')
      ) {
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
}

/** Streams an image from one engine's store to another's: `save` piped into `load`. */
export async function copyImage(
  from: EngineContext,
  to: EngineContext,
  image: string,
  toTmp: string,
  signal?: AbortSignal,
): Promise<void> {
  const timeoutMs = transferTimeoutMs(from.options);
  const save = spawnEngine(from.cli, imageSaveArgs(image), { timeoutMs, signal });
  let saveErr = '';
  save.stderr?.on('data', (chunk: Buffer) => {
    saveErr = (saveErr + chunk.toString()).slice(-STDERR_BYTES);
  });
  if (!save.stdout) throw new WorkerError('INTERNAL', 'podman save has no stdout');
  const load = await execEngineRaw(to.cli, imageLoadArgs(), {
    timeoutMs,
    signal,
    input: save.stdout,
    env: { TMPDIR: toTmp },
  });
  if (load.exitCode !== 0) save.kill('SIGKILL');
  const saved = await save;
  if (saved.isCanceled || load.cancelled) {
    throw new WorkerError('CANCELLED', `Copying the image ${image} was cancelled`);
  }
  if (saved.timedOut || load.timedOut) {
    throw new WorkerError(
      'ENGINE_FAILED',
      `Copying the image ${image} did not finish within ${timeoutMs} ms`,
      {
        retryable: true,
      },
    );
  }
  if (saved.exitCode !== 0) throw engineFailure('podman save', saved.exitCode ?? 1, saveErr);
  if (load.exitCode !== 0) throw engineFailure('podman load', load.exitCode, load.outputTail);
}

/**
 * Moves the image the build user built into the host's store, where the worker runs it,
 * and removes it from the user's store whatever happens.
 */
export async function moveBuiltImage(
  user: EngineContext,
  host: EngineContext,
  image: string,
  hostTmp: string,
  signal?: AbortSignal,
): Promise<void> {
  try {
    await copyImage(user, host, image, hostTmp, signal);
  } finally {
    await execEngineRaw(user.cli, removeImageArgs(image), {
      timeoutMs: user.options.callTimeoutMs,
    });
  }
}

/**
 * Removes from the build user's store the base images the host's store no longer has (by
 * id), so that they do not pile up there. Images a build is using are kept (removed
 * without --force), and so are the worker's own built images on their way to the host.
 */
async function pruneUserImages(
  host: EngineContext,
  user: EngineContext,
  signal?: AbortSignal,
): Promise<void> {
  const call = { timeoutMs: host.options.callTimeoutMs, signal };
  const ids = async (ctx: EngineContext, args: string[]) =>
    new Set((await execImageListing(ctx.cli, args, call)).split(/\s+/).filter(Boolean));
  const [hostIds, userIds, named] = await Promise.all([
    ids(host, allImageIdsArgs()),
    ids(user, allImageIdsArgs()),
    execImageListing(user.cli, imageNamesArgs(), call),
  ]);
  // No submission starts FROM the worker's own images: an image so named is a build's.
  const built = new Set(
    named
      .split('\n')
      .map((line) => line.split('\t'))
      .filter(([, repository]) => repository?.startsWith(BUILT_PREFIX))
      .map(([id]) => id),
  );
  for (const id of userIds) {
    if (hostIds.has(id) || built.has(id)) continue;
    await execEngineRaw(user.cli, removeUnusedImageArgs(id), call);
  }
}
