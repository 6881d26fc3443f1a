import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { sanitizeTar, tarFromFiles } from '../archive/safe-tar.js';
import type { StorageKind } from '../clients/types.js';
import { containerOwner } from '../config/owner.js';
import { formatSize } from '../config/size.js';
import { WorkerError } from '../errors.js';
import type { TaskEnv, TaskRun } from './context.js';
import { startModelBudget } from './outputs.js';

export interface DataFile {
  kind: StorageKind;
  uuid: string;
  /** Name of the file inside the volume. */
  name: string;
}

/** What one staged blob was, as it arrived: its digest, and the validators storage sent. */
export interface StagedBlob {
  uuid: string;
  /**
   * The sha-256 of the bytes that arrived, base64 (as digest headers write it); taken when
   * storage sent a digest or `digests` asked for it, else empty.
   */
  sha256: string;
  etag?: string;
  size: number;
}

export interface StagedFiles {
  bytes: number;
  blobs: StagedBlob[];
}

/** Default cap of a spooled blob: a blob without Content-Length could be endless. */
export const SPOOL_CAP_BYTES = 10 * 1024 ** 3;

/**
 * Streams storage blobs into a volume as one tar, each blob an entry, without holding a
 * blob in memory. A blob of unknown length is spooled to the task's private folder first,
 * since a tar header needs the size before the bytes; the spool stops at its cap.
 */
export async function stageFiles(
  env: TaskEnv,
  run: TaskRun,
  volume: string,
  files: DataFile[],
  options: { tmp: string; dirs?: string[]; digests?: boolean },
): Promise<StagedFiles> {
  const owner = containerOwner(env.limits.user);
  let total = 0;
  const blobs: StagedBlob[] = [];
  async function* entries() {
    for (const dir of options.dirs ?? []) yield { name: dir, type: 'directory' as const };
    for (const file of files) {
      const blob = await env.storage.getBlob(file.kind, file.uuid, run.signal);
      let size = blob.size;
      const staged: StagedBlob = { uuid: file.uuid, sha256: '', size: 0 };
      if (blob.validators?.etag) staged.etag = blob.validators.etag;
      // Hashed where there is a digest to check it against, or one to record (the cache).
      const declared = blob.validators?.sha256;
      let stream: Readable = blob.stream;
      if (declared !== undefined || options.digests) {
        stream = blob.stream.pipe(
          checkDigest(file, declared, (sha256) => {
            staged.sha256 = sha256;
          }),
        );
        blob.stream.on('error', (error) => stream.destroy(error));
        stream.on('close', () => {
          if (!blob.stream.destroyed) blob.stream.destroy();
        });
      }
      if (size === undefined) {
        const spool = join(options.tmp, `spool-${file.uuid}`);
        const cap = env.spoolCapBytes ?? SPOOL_CAP_BYTES;
        let spooled = 0;
        const capped = new Transform({
          transform(chunk: Buffer, _encoding, done) {
            spooled += chunk.length;
            if (spooled <= cap) return done(null, chunk);
            done(
              new WorkerError(
                'STORAGE_FAILED',
                `storage sent ${file.kind} ${file.uuid} without its size, and more than the ${cap} bytes the worker spools to disk`,
                { hint: 'storage must answer a blob with its Content-Length' },
              ),
            );
          },
        });
        await pipeline(stream, capped, createWriteStream(spool, { mode: 0o600 }), {
          signal: run.signal,
        });
        size = (await stat(spool)).size;
        stream = createReadStream(spool);
      }
      total += size;
      staged.size = size;
      blobs.push(staged);
      run.onEvent?.({ type: 'staged', name: `${file.kind}/${file.uuid}`, bytes: size });
      yield { name: file.name, size, stream };
    }
  }
  await env.engine.importVolume(volume, tarFromFiles(entries(), owner), run.signal);
  return { bytes: total, blobs };
}

/**
 * Passes the blob through while it takes its sha-256; at its end, a digest storage sent
 * that differs fails the stream: the bytes are not the blob storage meant (a broken
 * transfer or a broken storage), the worker side's fault, so the task is tried again.
 */
function checkDigest(
  file: DataFile,
  declared: string | undefined,
  done: (sha256: string) => void,
): Transform {
  const hash = createHash('sha256');
  return new Transform({
    highWaterMark: 1 << 16,
    transform(chunk: Buffer, _encoding, next) {
      hash.update(chunk);
      next(null, chunk);
    },
    flush(next) {
      const sha256 = hash.digest('base64');
      done(sha256);
      if (declared === undefined || declared === sha256) return next();
      next(
        new WorkerError(
          'STORAGE_FAILED',
          `storage sent ${file.kind} ${file.uuid} with the digest sha-256=${declared}, but its bytes have sha-256=${sha256}`,
          { retryable: true, hint: 'the blob in storage, or its digest, is damaged' },
        ),
      );
    },
  });
}

/** A volume holding only these empty folders, owned by the containers' user. */
export async function prepareEmpty(env: TaskEnv, run: TaskRun, volume: string, dirs: string[]) {
  const owner = containerOwner(env.limits.user);
  async function* entries() {
    for (const dir of dirs) yield { name: dir, type: 'directory' as const };
  }
  await env.engine.importVolume(volume, tarFromFiles(entries(), owner), run.signal);
}

/**
 * Unpacks an untrusted model .tar.gz from storage into a volume, refusing anything unsafe.
 * `sized`: the volume is on the step's filesystem of --disk-limit (a start model the
 * submission goes on writing), so running out of room there is the model's doing.
 */
export async function stageModel(
  env: TaskEnv,
  run: TaskRun,
  volume: string,
  modelUuid: string,
  options: { sized?: boolean } = {},
) {
  const owner = containerOwner(env.limits.user);
  const blob = await env.storage.getBlob('model', modelUuid, run.signal);
  run.onEvent?.({ type: 'staged', name: `model/${modelUuid}`, bytes: blob.size ?? 0 });
  // An unsafe entry fails the sanitized stream; the engine reports that error, not the
  // broken pipe it causes.
  // Counted unpacked while it streams: a gzip bomb stops at the cap, not on a full disk.
  const budget = startModelBudget(env, modelUuid);
  try {
    await env.engine.importVolume(
      volume,
      sanitizeTar(blob.stream, { gzip: true, ...owner, label: `model ${modelUuid}`, budget }),
      run.signal,
    );
  } catch (error) {
    throw options.sized ? modelTooBigOnDisk(error, env, modelUuid) : error;
  }
  return blob.size ?? 0;
}

/**
 * Within the cap by its files' sizes, a model can still take more room than that on disk
 * (many small files, each a block or more): on the step's own filesystem that is the
 * model's fault, never the host's. Any other failure passes through as it was.
 */
function modelTooBigOnDisk(error: unknown, env: TaskEnv, modelUuid: string): unknown {
  if (!(error instanceof WorkerError) || error.code !== 'ENGINE_FAILED') return error;
  if (!/no space left on device/i.test(`${error.message}\n${error.detail ?? ''}`)) return error;
  return new WorkerError(
    'ARCHIVE_REJECTED',
    `the model ${modelUuid} from storage does not fit in the ${formatSize(env.diskLimitBytes)} a container step may write (--disk-limit); it was left by an earlier run of the submission, so the task cannot start from it`,
    { hint: 'the operator can raise --disk-limit', cause: error },
  );
}
