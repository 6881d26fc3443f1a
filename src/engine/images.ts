import { z } from 'zod';
import { WorkerError } from '../errors.js';
import {
  imageExistsArgs,
  imageInspectArgs,
  imageListArgs,
  imageNamesOfArgs,
  pruneImagesArgs,
  removeUnusedImageArgs,
} from './args.js';
import type { EngineContext } from './context.js';
import { checkResult, type ExecResult, execEngineRaw, execImageListing } from './exec.js';
import type { ImageFacts, ImageLookup } from './types.js';

const inspectSchema = z.array(
  z.object({
    Id: z.string(),
    RepoTags: z.array(z.string()).nullish(),
    Size: z.number(),
    Created: z.string(),
    Labels: z.record(z.string(), z.string()).nullish(),
    Config: z.object({ Labels: z.record(z.string(), z.string()).nullish() }).nullish(),
  }),
);

/** The images that carry this one label, with their names, size and creation time. */
export async function listImages(
  ctx: EngineContext,
  label: Record<string, string>,
): Promise<ImageFacts[]> {
  if (Object.keys(label).length !== 1) {
    throw new WorkerError('INTERNAL', 'listImages takes exactly one label');
  }
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const ids = [
    ...new Set(
      (await execImageListing(ctx.cli, imageListArgs(label), call)).split(/\s+/).filter(Boolean),
    ),
  ];
  if (ids.length === 0) return [];
  let found = await inspect(ctx, ids);
  // An image removed between the list and the inspect fails the whole call: one at a time.
  if (!found) {
    const each = await Promise.all(ids.map((id) => inspect(ctx, [id])));
    found = each.flatMap((facts) => facts ?? []);
  }
  const [key, value] = Object.entries(label)[0] as [string, string];
  return found.filter((image) => image.labels[key] === value);
}

async function inspect(ctx: EngineContext, ids: string[]): Promise<ImageFacts[] | undefined> {
  const result = await execEngineRaw(ctx.cli, imageInspectArgs(ids), {
    timeoutMs: ctx.options.callTimeoutMs,
  });
  if (result.exitCode !== 0) return undefined;
  return inspectSchema.parse(JSON.parse(result.stdout)).map((image) => ({
    id: image.Id.replace(/^sha256:/, ''),
    names: (image.RepoTags ?? []).filter((name) => !name.startsWith('<none>')),
    sizeBytes: image.Size,
    createdMs: Date.parse(image.Created) || 0,
    labels: { ...(image.Config?.Labels ?? {}), ...(image.Labels ?? {}) },
  }));
}

/**
 * Removes one name of an image; the image goes with its last name. 'kept' when the engine
 * refuses (a container, perhaps of another worker, uses it), 'missing' when it is gone.
 */
export async function removeImage(
  ctx: EngineContext,
  name: string,
): Promise<'removed' | 'kept' | 'missing'> {
  ctx.knownImages?.delete(name);
  const result = await execEngineRaw(ctx.cli, removeUnusedImageArgs(name), {
    timeoutMs: ctx.options.callTimeoutMs,
  });
  if (result.exitCode === 0) return 'removed';
  if (/image not known|no such image/i.test(result.outputTail)) return 'missing';
  return 'kept';
}

/** Removes the dangling images (layers of failed builds) carrying this one label. */
export async function pruneImages(
  ctx: EngineContext,
  label: Record<string, string>,
): Promise<void> {
  if (Object.keys(label).length !== 1) {
    throw new WorkerError('INTERNAL', 'pruneImages takes exactly one label');
  }
  await execImageListing(ctx.cli, pruneImagesArgs(label), {
    timeoutMs: ctx.options.callTimeoutMs,
  });
}

/** Whether the image exists: asked once per process, then remembered (EngineContext.knownImages). */
export async function imageExists(
  ctx: EngineContext,
  image: string,
  call: { timeoutMs: number; signal?: AbortSignal },
): Promise<boolean> {
  if (ctx.knownImages?.has(image)) return true;
  const args = imageExistsArgs(ctx.info, image);
  const result = await execEngineRaw(ctx.cli, args, call);
  if (isMissing(ctx, result)) return false;
  // An engine that cannot answer is not an answer: a build started on it would fail, and
  // the failure might be blamed on the build context.
  checkResult(ctx.cli, args, result, call.timeoutMs);
  ctx.knownImages?.add(image);
  return true;
}

/** podman image exists says 1 for a missing image (125 for an error); docker, "No such ...". */
function isMissing(ctx: EngineContext, result: ExecResult): boolean {
  if (result.timedOut || result.cancelled || result.exitCode === 0) return false;
  if (ctx.info.name === 'podman') return result.exitCode === 1;
  return result.exitCode === 1 && /no such (image|object)/i.test(result.outputTail);
}

/** See Engine.imageLookup. */
export function imageLookup(ctx: EngineContext, expected: number): ImageLookup {
  const asked: string[] = [];
  let arrived = 0;
  let answer: (found: Set<string>) => void = () => {};
  let fail: (error: unknown) => void = () => {};
  const found = new Promise<Set<string>>((resolve, reject) => {
    answer = resolve;
    fail = reject;
  });
  found.catch(() => undefined);
  let timeoutMs = ctx.options.callTimeoutMs;
  const arrive = () => {
    arrived++;
    if (arrived === expected) imagesExisting(ctx, asked, timeoutMs).then(answer, fail);
  };
  return {
    async exists(image, call) {
      if (ctx.knownImages?.has(image)) {
        arrive();
        return true;
      }
      asked.push(image);
      timeoutMs = call.timeoutMs;
      arrive();
      return (await found).has(image);
    },
    pass: arrive,
  };
}

/** Which of these images exist, in one call; those found are remembered as imageExists does. */
async function imagesExisting(
  ctx: EngineContext,
  images: readonly string[],
  timeoutMs: number,
): Promise<Set<string>> {
  if (images.length === 0) return new Set();
  if (images.length === 1) {
    const [image] = images as [string];
    return new Set((await imageExists(ctx, image, { timeoutMs })) ? [image] : []);
  }
  const result = await execEngineRaw(ctx.cli, imageNamesOfArgs(images), { timeoutMs });
  const names = new Set(
    result.stdout.split('\n').flatMap((line) => {
      try {
        const parsed = z.array(z.string()).nullable().safeParse(JSON.parse(line));
        return parsed.success ? (parsed.data ?? []) : [];
      } catch {
        return [];
      }
    }),
  );
  const existing = new Set(images.filter((image) => names.has(image)));
  for (const image of existing) ctx.knownImages?.add(image);
  return existing;
}
