import { constants } from 'node:fs';
import { type FileHandle, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import { WorkerError } from '../errors.js';
import { volumeExportArgs } from './args.js';
import { type EngineContext, transferTimeoutMs } from './context.js';
import { capDetail, engineFailure, spawnEngine } from './exec.js';
import { LineSplitter, LogTail } from './log-tail.js';

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
    const tail = new LogTail(50, 8 * 1024);
    const lines = new LineSplitter((line) => tail.push(line));
    sub.stderr?.on('data', (chunk: Buffer) => lines.write(chunk));
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
    lines.end();
    const what = `${ctx.cli.name} volume export`;
    if (result.isCanceled) throw new WorkerError('CANCELLED', `${what} was cancelled`);
    if (result.timedOut) {
      throw new WorkerError('ENGINE_FAILED', `${what} timed out`, {
        retryable: true,
        detail: capDetail(tail.toString()),
      });
    }
    if (result.exitCode !== 0) throw engineFailure(what, result.exitCode ?? 1, tail.toString());
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
