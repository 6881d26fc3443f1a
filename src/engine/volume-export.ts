import { constants } from 'node:fs';
import { type FileHandle, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import { volumeExportArgs } from './args.js';
import { type EngineContext, transferTimeoutMs } from './context.js';
import { spawnEngine, watchStreamed } from './exec.js';

/**
 * Whether `podman volume export` can stream a volume through a FIFO: it writes to a file
 * only (it opens /dev/stdout, which fails when stdout is a socket, as Node's pipes are), and
 * the FIFO lives in the worker's private folder, so the engine must run as the worker's own
 * user on this host (not a remote service). Elsewhere a helper container's `cp` does the job,
 * at four more calls.
 */
export function canExportThroughFifo(ctx: EngineContext): boolean {
  return (
    ctx.info.name === 'podman' &&
    !ctx.cli.engineHost &&
    !ctx.info.rootless &&
    process.getuid?.() === 0
  );
}

/**
 * Streams the volume as a tar into `out` through a FIFO in a private folder, in one engine
 * call. `out` ends only once the engine has exited cleanly; any failure destroys it.
 */
export async function exportThroughFifo(
  ctx: EngineContext,
  volume: string,
  out: PassThrough,
  signal?: AbortSignal,
): Promise<void> {
  const dir = await mkdtemp(join(ctx.cli.workDir ?? tmpdir(), 'cw-export-'));
  try {
    const fifo = join(dir, 'volume.tar');
    await execa('mkfifo', ['-m', '600', fifo]);
    const sub = spawnEngine(ctx.cli, volumeExportArgs(volume, fifo), {
      timeoutMs: transferTimeoutMs(ctx.options),
      signal,
    });
    const watch = watchStreamed(`${ctx.cli.name} volume export`, sub);
    // The reader went away: stop the engine instead of letting it block on a full FIFO.
    const onClose = () => sub.kill();
    out.on('close', onClose);
    let reader: FileHandle | undefined;
    // Opening a FIFO to read waits for a writer: an engine that fails before it opens the
    // FIFO must not leave that wait hanging, so a writer of our own ends it.
    const opening = open(fifo, constants.O_RDONLY);
    const exited = sub.then(async (result) => {
      if (!reader) await unblock(fifo);
      return result;
    });
    let copyError: unknown;
    try {
      reader = await opening;
      await pipeline(reader.createReadStream({ autoClose: false }), out, { end: false });
    } catch (error) {
      copyError = error;
      sub.kill();
    } finally {
      await reader?.close().catch(() => undefined);
    }
    const result = await exited;
    if (copyError) throw copyError;
    out.off('close', onClose);
    watch.check(result);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function unblock(fifo: string): Promise<void> {
  try {
    const writer = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    await writer.close();
  } catch {
    // No reader waiting (ENXIO): nothing to unblock.
  }
}
