import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isAbortError, WorkerError } from '../errors.js';
import type { ModelMetadata } from '../schemas.js';
import { parseModelMetadata } from './storage.js';
import type { Blob, StorageClient, StorageKind } from './types.js';

/** How a storage folder is laid out, for help texts and the README. */
export function describeLocalStorageLayout(): string {
  return [
    'A local storage folder holds one folder per object:',
    '  <dir>/<kind>/<uuid>/blob        the bytes',
    '  <dir>/<kind>/<uuid>/meta.json   the metadata (optional, except a model needs {"uuid", "algo"})',
    'where <kind> is problem, algo, model, data or prediction. A problem workflow and an algo are',
    'the .tar.gz of a build context with a Dockerfile, a model the .tar.gz of the model folder,',
    'a data set one file. The worker writes models and predictions there the same way.',
  ].join('\n');
}

// A uuid becomes a folder name: nothing that could climb out of the storage folder.
const SAFE_NAME = /^[0-9A-Za-z_-][0-9A-Za-z._-]*$/;

/** The built-in storage used when no storage host is given: a folder a person can fill by hand. */
export class LocalStorageClient implements StorageClient {
  readonly dir: string;
  readonly description: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
    this.description = `local storage ${this.dir}`;
  }

  async health(): Promise<void> {
    const info = await stat(this.dir).catch(() => undefined);
    if (!info?.isDirectory()) {
      throw new WorkerError('STORAGE_FAILED', `${this.description}: the folder does not exist`, {
        detail: describeLocalStorageLayout(),
        hint: 'create it and put the blobs in, or pass --storage-dir, or --storage-host for a storage service',
      });
    }
  }

  async getMetadata(kind: StorageKind, uuid: string): Promise<unknown> {
    const file = join(this.objectDir(kind, uuid), 'meta.json');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw this.fsError(file, error);
      // Metadata is optional for a hand-filled folder: the blob alone says the object exists.
      await this.blobInfo(kind, uuid);
      return { uuid };
    }
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new WorkerError('STORAGE_FAILED', `${file} is not valid JSON`, {
        detail: (error as Error).message,
      });
    }
  }

  async getModelMetadata(uuid: string): Promise<ModelMetadata> {
    const json = await this.getMetadata('model', uuid);
    try {
      return parseModelMetadata(json, uuid, this.description);
    } catch (error) {
      const file = join(this.objectDir('model', uuid), 'meta.json');
      throw new WorkerError('STORAGE_FAILED', (error as WorkerError).message, {
        detail: (error as WorkerError).detail,
        hint: `write ${file} as {"uuid": "${uuid}", "algo": "<algo uuid>"}`,
      });
    }
  }

  async getBlob(kind: StorageKind, uuid: string, signal?: AbortSignal): Promise<Blob> {
    const { file, size } = await this.blobInfo(kind, uuid);
    const handle = await open(file, 'r').catch((error) => {
      throw this.fsError(file, error);
    });
    const stream = handle.createReadStream({ signal });
    return { stream, size };
  }

  async uploadModel(
    uuid: string,
    algo: string,
    body: Readable,
    size: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const dir = this.objectDir('model', uuid);
    await this.writeAtomically(join(dir, 'blob'), body, size, signal);
    const meta = { uuid, algo, timestamp_upload: Math.floor(Date.now() / 1000) };
    await this.writeAtomically(join(dir, 'meta.json'), JSON.stringify(meta));
  }

  /** Like the storage service, an existing prediction of the same size is our own earlier upload. */
  async uploadPrediction(uuid: string, file: string, signal?: AbortSignal): Promise<void> {
    const size = (
      await stat(file).catch((error) => {
        throw new WorkerError('PREDICTION_MISSING', `prediction file ${file} cannot be read`, {
          detail: (error as Error).message,
        });
      })
    ).size;
    const dir = this.objectDir('prediction', uuid);
    const existing = await stat(join(dir, 'blob')).catch(() => undefined);
    if (existing) {
      if (existing.size === size) return;
      throw new WorkerError(
        'STORAGE_FAILED',
        `${this.description} already holds a different prediction ${uuid}`,
        {
          hint: 'upload the prediction under a new uuid',
        },
      );
    }
    await this.writeAtomically(join(dir, 'blob'), createReadStream(file), size, signal);
    const meta = { uuid, size, timestamp_upload: Math.floor(Date.now() / 1000) };
    await this.writeAtomically(join(dir, 'meta.json'), JSON.stringify(meta));
  }

  async close(): Promise<void> {}

  private objectDir(kind: StorageKind, uuid: string): string {
    if (!SAFE_NAME.test(uuid)) {
      throw new WorkerError(
        'STORAGE_FAILED',
        `"${uuid}" cannot name a ${kind} in ${this.description}`,
      );
    }
    return join(this.dir, kind, uuid);
  }

  private async blobInfo(kind: StorageKind, uuid: string): Promise<{ file: string; size: number }> {
    const file = join(this.objectDir(kind, uuid), 'blob');
    const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw this.fsError(file, error);
      throw new WorkerError(
        'STORAGE_FAILED',
        `${this.description} has no ${kind} ${uuid}: ${file} is missing`,
        {
          detail: describeLocalStorageLayout(),
          hint: `put the ${kind} at ${file}`,
        },
      );
    });
    return { file, size: info.size };
  }

  /** Writes to a temporary file beside the target, then renames: readers never see half a file. */
  private async writeAtomically(
    target: string,
    content: Readable | string,
    size?: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const dir = join(target, '..');
    const temp = `${target}.tmp-${randomBytes(6).toString('hex')}`;
    try {
      await mkdir(dir, { recursive: true });
      if (typeof content === 'string') {
        await writeFile(temp, content);
      } else {
        let written = 0;
        const count = new Transform({
          transform(chunk: Buffer, _encoding, done) {
            written += chunk.length;
            done(null, chunk);
          },
        });
        await pipeline(content, count, createWriteStream(temp), { signal });
        if (size !== undefined && written !== size) {
          throw new WorkerError(
            'INTERNAL',
            `${target}: ${written} bytes arrived, ${size} were announced`,
          );
        }
      }
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      if (error instanceof WorkerError) throw error;
      if (isAbortError(error) && signal?.reason instanceof WorkerError) throw signal.reason;
      if (isAbortError(error)) throw new WorkerError('CANCELLED', `writing ${target}: cancelled`);
      throw this.fsError(target, error);
    }
  }

  private fsError(file: string, error: unknown): WorkerError {
    return new WorkerError('STORAGE_FAILED', `${this.description}: cannot use ${file}`, {
      detail: (error as Error).message,
      cause: error,
    });
  }
}
