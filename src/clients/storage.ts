import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { toWorkerError, WorkerError } from '../errors.js';
import { describeIssues, type ModelMetadata, ModelMetadataSchema, NIL_UUID } from '../schemas.js';
import { type BlobValidators, validatorsFrom } from './blob-validators.js';
import {
  type CredentialAnswers,
  type HttpCall,
  HttpService,
  type HttpServiceOptions,
} from './http.js';
import type { Blob, StorageClient, StorageKind } from './types.js';

/** The storage service over HTTP (SPEC.md section 3). */
export class HttpStorageClient implements StorageClient {
  private readonly http: HttpService;

  constructor(options: HttpServiceOptions) {
    this.http = new HttpService('storage', options);
  }

  get description(): string {
    return this.http.description;
  }

  async health(signal?: AbortSignal): Promise<void> {
    await this.http.sendAndDrain({ method: 'GET', path: '/health', ok: [200], signal });
  }

  /** The metadata of the nil problem: there is none, but a stranger must not even learn that. */
  async credentialAnswers(signal?: AbortSignal): Promise<CredentialAnswers> {
    return this.http.credentialAnswers({
      method: 'GET',
      path: `/problem/${NIL_UUID}`,
      ok: [],
      signal,
    });
  }

  async getMetadata(kind: StorageKind, uuid: string, signal?: AbortSignal): Promise<unknown> {
    return this.http.sendForJson({
      method: 'GET',
      path: `/${kind}/${encodeURIComponent(uuid)}`,
      ok: [200],
      signal,
      what: `${kind} ${uuid}`,
    });
  }

  async getModelMetadata(uuid: string, signal?: AbortSignal): Promise<ModelMetadata> {
    return parseModelMetadata(
      await this.getMetadata('model', uuid, signal),
      uuid,
      this.description,
    );
  }

  /**
   * The blob's bytes as they arrive. Errors while reading become WorkerErrors;
   * destroying the stream (or aborting `signal`) aborts the download. A caller that
   * gives up before reading must destroy the stream to free the connection. The
   * download's deadline grows with the bytes read (see HttpServiceOptions.deadlineMs).
   */
  async getBlob(kind: StorageKind, uuid: string, signal?: AbortSignal): Promise<Blob> {
    let received = 0;
    const call: HttpCall = {
      method: 'GET',
      path: `/${kind}/${encodeURIComponent(uuid)}/blob`,
      ok: [200],
      signal,
      what: `${kind} ${uuid}`,
      transferred: () => received,
    };
    const response = await this.http.send(call);
    const length = Number(response.headers['content-length']);
    const stream = new Transform({
      highWaterMark: 1 << 16,
      transform(chunk: Buffer, _encoding, done) {
        received += chunk.length;
        done(null, chunk);
      },
    });
    response.body.on('error', (error) => stream.destroy(this.http.failure(call, error)));
    stream.on('close', () => {
      if (!response.body.destroyed) response.body.destroy();
    });
    response.body.pipe(stream);
    return {
      stream,
      size: Number.isSafeInteger(length) && length >= 0 ? length : undefined,
      validators: validatorsFrom(response.headers),
    };
  }

  /** The blob's headers only: its body is dropped unread, so the connection is closed. */
  async blobValidators(
    kind: StorageKind,
    uuid: string,
    signal?: AbortSignal,
  ): Promise<BlobValidators> {
    const response = await this.http.send({
      method: 'GET',
      path: `/${kind}/${encodeURIComponent(uuid)}/blob`,
      ok: [200],
      signal,
      what: `${kind} ${uuid}`,
    });
    response.body.on('error', () => undefined);
    response.body.destroy();
    return validatorsFrom(response.headers);
  }

  /**
   * The raw .tar.gz with its exact Content-Length. A 409 means storage already holds
   * model_end: the uuid belongs to this learn task alone, so that is an earlier attempt of
   * the same task (NSQ delivers a task again after a crash), and counts as uploaded.
   */
  async uploadModel(
    uuid: string,
    algo: string,
    body: Readable,
    size: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const query = new URLSearchParams({ uuid, algo });
    try {
      await this.http.sendAndDrain({
        method: 'POST',
        path: `/model?${query}`,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
        body,
        ok: [201, 409],
        signal,
        transferred: () => size,
      });
    } catch (error) {
      // The model's own stream failing (packing the tar) is not the storage's fault;
      // undici's own errors (a length that does not match) are already explained.
      const own = body.errored as { code?: unknown } | null;
      if (!body.destroyed) body.destroy();
      const fromUndici = typeof own?.code === 'string' && own.code.startsWith('UND_ERR');
      throw own && !fromUndici ? toWorkerError(own) : error;
    }
  }

  /**
   * multipart/form-data with `uuid`, `size`, then `blob`, streamed from the file with an
   * exact Content-Length. A 409 (uuid exists) counts as success only when storage already
   * holds a prediction of this uuid with this size: that is a retry of our own upload whose
   * answer was lost. Anything else under our uuid is not ours, and is an error.
   */
  async uploadPrediction(uuid: string, file: string, signal?: AbortSignal): Promise<void> {
    const size = await fileSize(file);
    const form = multipartPrediction(uuid, file, size);
    const status = await this.http.sendAndDrain({
      method: 'POST',
      path: '/prediction',
      headers: {
        'content-type': `multipart/form-data; boundary=${form.boundary}`,
        'content-length': String(form.length),
      },
      body: form.body,
      ok: [201, 409],
      signal,
      transferred: () => form.length,
    });
    if (status === 201) return;
    const existing = (await this.getMetadata('prediction', uuid, signal)) as { size?: unknown };
    if (Number(existing?.size) === size) return;
    throw new WorkerError(
      'STORAGE_FAILED',
      `storage already holds a different prediction ${uuid} (its size is ${String(existing?.size)}, ours ${size} bytes)`,
      { hint: 'upload the prediction under a new uuid' },
    );
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}

export function parseModelMetadata(json: unknown, uuid: string, source: string): ModelMetadata {
  const parsed = ModelMetadataSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  throw new WorkerError('STORAGE_FAILED', `${source}: the metadata of model ${uuid} is unusable`, {
    detail: describeIssues(parsed.error, 'model metadata'),
  });
}

async function fileSize(file: string): Promise<number> {
  try {
    const info = await stat(file);
    if (info.isFile()) return info.size;
  } catch (error) {
    throw new WorkerError('PREDICTION_MISSING', `prediction file ${file} cannot be read`, {
      detail: (error as Error).message,
      cause: error,
    });
  }
  throw new WorkerError('PREDICTION_MISSING', `prediction ${file} is not a regular file`);
}

function multipartPrediction(uuid: string, file: string, size: number) {
  const boundary = `compute-worker-${randomBytes(16).toString('hex')}`;
  const part = (name: string, extra = '') =>
    `--${boundary}\r\nContent-Disposition: form-data; name="${name}"${extra}\r\n`;
  const head = Buffer.from(
    `${part('uuid')}\r\n${uuid}\r\n${part('size')}\r\n${size}\r\n` +
      `${part('blob', `; filename="${uuid}"`)}Content-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  async function* parts(): AsyncGenerator<Buffer> {
    yield head;
    // Only the bytes counted in Content-Length, even if the file grows meanwhile.
    if (size > 0) yield* createReadStream(file, { start: 0, end: size - 1 });
    yield tail;
  }
  return { boundary, length: head.length + size + tail.length, body: Readable.from(parts()) };
}
