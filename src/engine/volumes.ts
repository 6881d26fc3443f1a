import { randomBytes } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import {
  copyInArgs,
  copyOutArgs,
  helperCreateArgs,
  removeContainersArgs,
  removeVolumesArgs,
  volumeCreateArgs,
  volumeImportArgs,
  volumeLabelLinesArgs,
  volumeListArgs,
} from './args.js';
import { type EngineContext, transferTimeoutMs } from './context.js';
import { execEngine, execEngineRaw, spawnEngine, watchStreamed } from './exec.js';
import { checkMountedVolumes } from './mount-check.js';
import { ensureRootfsImage } from './rootfs-image.js';
import type { LabelledVolume } from './types.js';
import { canExportThroughFifo, exportThroughFifo } from './volume-export.js';

/**
 * Named volumes filled and read as tar streams, so no host folder is ever shared with a
 * container. A local podman fills a volume with `volume import`; otherwise a volume is reached
 * through a helper container that is created, never started, with `cp`.
 *
 * Ownership: imported files keep the uid/gid of their tar headers. The volume's root
 * folder becomes writable by the container's user: podman hands an unused volume's root
 * to the user of the first container that mounts it; docker copies the helper image's
 * /mnt (mode 0777) onto a new volume's root, done at creation.
 */
export async function createVolume(
  ctx: EngineContext,
  labels: Record<string, string>,
  given?: string,
): Promise<string> {
  const name = given ?? `cw-vol-${randomBytes(8).toString('hex')}`;
  await execEngine(ctx.cli, volumeCreateArgs(name, labels), {
    timeoutMs: ctx.options.callTimeoutMs,
  });
  if (ctx.info.name === 'docker') await withHelper(ctx, name, async () => {});
  return name;
}

export async function importVolume(
  ctx: EngineContext,
  volume: string,
  input: Readable,
  signal?: AbortSignal,
): Promise<void> {
  const call = { timeoutMs: transferTimeoutMs(ctx.options), signal, input };
  // podman's remote client refuses `volume import` (4.3): it goes through a helper as docker's does.
  if (ctx.info.name === 'podman' && !ctx.cli.engineHost) {
    await execEngine(ctx.cli, volumeImportArgs(volume), call);
    return;
  }
  await withHelper(ctx, volume, (helper) =>
    execEngine(ctx.cli, copyInArgs(helper, ctx.info.name), call),
  );
}

export function exportVolume(ctx: EngineContext, volume: string, signal?: AbortSignal): Readable {
  const out = new PassThrough();
  const stream = () =>
    canExportThroughFifo(ctx)
      ? exportThroughFifo(ctx, volume, out, signal)
      : withHelper(ctx, volume, (helper) => streamInto(ctx, copyOutArgs(helper), out, signal));
  stream().then(
    () => out.end(),
    (error: unknown) => out.destroy(error instanceof Error ? error : new Error(String(error))),
  );
  return out;
}

async function streamInto(
  ctx: EngineContext,
  args: string[],
  out: PassThrough,
  signal?: AbortSignal,
): Promise<void> {
  const sub = spawnEngine(ctx.cli, args, { timeoutMs: transferTimeoutMs(ctx.options), signal });
  const watch = watchStreamed(`${ctx.cli.name} ${args.slice(0, 2).join(' ')}`, sub);
  // The reader went away: stop the engine instead of letting it block on a full pipe.
  const onClose = () => sub.kill();
  out.on('close', onClose);
  sub.stdout?.pipe(out, { end: false });
  const result = await sub;
  out.off('close', onClose);
  watch.check(result);
}

/** The helper image holds only an empty, world-writable /mnt. */
async function helperImage(ctx: EngineContext): Promise<string> {
  return ensureRootfsImage(ctx, 'volume-helper', [
    { name: 'mnt/', type: 'directory', mode: 0o777 },
  ]);
}

async function withHelper<T>(
  ctx: EngineContext,
  volume: string,
  use: (helper: string) => Promise<T>,
): Promise<T> {
  const image = await helperImage(ctx);
  const helper = `cw-helper-${randomBytes(8).toString('hex')}`;
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  await execEngine(ctx.cli, helperCreateArgs(image, helper, volume, {}), call);
  try {
    await checkMountedVolumes(ctx, [helper], [volume]);
    return await use(helper);
  } finally {
    await execEngine(ctx.cli, removeContainersArgs([helper]), call).catch(() => undefined);
  }
}

/** One label: podman 4.3 ORs several. What is removed between the two calls is left out. */
export async function listVolumes(
  ctx: EngineContext,
  label: Record<string, string>,
): Promise<LabelledVolume[]> {
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const names = (await execEngine(ctx.cli, volumeListArgs(label), call))
    .split(/\s+/)
    .filter(Boolean);
  if (names.length === 0) return [];
  const out = await execEngineRaw(ctx.cli, volumeLabelLinesArgs(names), call);
  return out.stdout.split('\n').flatMap((line) => {
    const [name = '', json = ''] = line.split('\t');
    if (!name || !json) return [];
    try {
      const labels = (JSON.parse(json) as Record<string, string> | null) ?? {};
      return [{ name, labels }];
    } catch {
      return [];
    }
  });
}

export async function removeVolumes(ctx: EngineContext, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  await execEngine(ctx.cli, removeVolumesArgs(names), { timeoutMs: ctx.options.callTimeoutMs });
}
