import { imageLoadArgs, imageSaveArgs } from '../engine/args.js';
import { type EngineContext, transferTimeoutMs } from '../engine/context.js';
import { engineFailure, execEngineRaw, spawnEngine } from '../engine/exec.js';
import { WorkerError } from '../errors.js';
import { extractFlags, parseContainerfile } from './parse.js';

const STDERR_BYTES = 8 * 1024;

/** The images the stages of the context's Containerfiles start FROM, but scratch and earlier stages. */
export function baseImages(containerfiles: Iterable<string>): string[] {
  const images = new Set<string>();
  for (const text of containerfiles) {
    const stages: string[] = [];
    const parsed = parseContainerfile(text);
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
  // A load that failed is the cause: the save was stopped for it.
  if (load.exitCode !== 0) throw engineFailure('podman load', load.exitCode, load.outputTail);
  if (saved.exitCode !== 0) throw engineFailure('podman save', saved.exitCode ?? 1, saveErr);
}
