import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type RecordedRequest,
  readBody,
  type StandIn,
  type StandInOptions,
  sendJson,
  startStandIn,
} from './http-stand-in.js';

/**
 * A storage service that speaks SPEC.md section 3 strictly, for tests: Basic Auth,
 * Content-Length required on model uploads, multipart fields in the order uuid, size,
 * blob with a size that matches, 201 on uploads, 409 for a model or prediction uuid that
 * exists (the first upload stays).
 */

const KINDS = ['problem', 'algo', 'model', 'data', 'prediction'] as const;
export type Kind = (typeof KINDS)[number];

export interface StoredObject {
  /** The bytes, or a file served from disk (for blobs too big to hold). */
  blob?: Buffer | { file: string };
  meta: Record<string, unknown>;
  /** The blob's sha-256 (base64), sent as Repr-Digest; its ETag is made from it. */
  digest?: Promise<string>;
  /** Sent instead of the true digest: a storage whose digest does not match its bytes. */
  wrongDigest?: string;
  /** Sent with neither Repr-Digest nor ETag: a storage that cannot say what it holds. */
  noValidators?: boolean;
}

export interface StorageServer extends StandIn {
  /** Puts an object in storage; its metadata defaults to `{uuid}`. */
  seed(
    kind: Kind,
    uuid: string,
    object: { blob?: Buffer | string | { file: string }; meta?: Record<string, unknown> },
  ): void;
  object(kind: Kind, uuid: string): StoredObject | undefined;
  /** The bytes of an uploaded (or seeded in memory) blob. */
  blob(kind: Kind, uuid: string): Buffer | undefined;
  /**
   * Gives the object new bytes (its metadata stays): a new digest and ETag. With
   * `wrongDigest`, a Repr-Digest that is not the bytes' own is sent with them; with
   * `noValidators`, neither a digest nor an ETag.
   */
  changeBlob(
    kind: Kind,
    uuid: string,
    blob: Buffer | string,
    options?: { wrongDigest?: string; noValidators?: boolean },
  ): void;
  /**
   * Sends blobs held in memory `chunkBytes` at a time, one chunk every `intervalMs`: a
   * download read for its headers alone is then seen cut off (RecordedRequest.completed
   * false), where loopback's buffers would otherwise take a whole blob at once.
   */
  pace(chunkBytes: number, intervalMs: number): void;
}

export async function startStorageServer(options: StandInOptions = {}): Promise<StorageServer> {
  const objects = new Map<string, StoredObject>();
  let pacing: { chunkBytes: number; intervalMs: number } | undefined;
  const key = (kind: string, uuid: string) => `${kind}/${uuid}`;
  const now = () => Math.floor(Date.now() / 1000);

  async function route(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    record: RecordedRequest,
  ) {
    const parts = url.pathname.split('/').slice(1);
    const [kind, uuid, blob, ...rest] = parts;
    if (req.method === 'GET' && url.pathname === '/health')
      return sendJson(res, 200, { status: 'ok' });
    if (
      !KINDS.includes(kind as Kind) ||
      rest.length > 0 ||
      (blob !== undefined && blob !== 'blob')
    ) {
      await readBody(req);
      return sendJson(res, 404, { error: `no route ${req.method} ${url.pathname}` });
    }
    if (req.method === 'GET' && uuid) {
      const object = objects.get(key(kind as Kind, uuid));
      if (!object || (blob && !object.blob)) {
        return sendJson(res, 404, { error: `${kind} ${uuid} not found` });
      }
      if (!blob) return sendJson(res, 200, object.meta);
      return sendBlob(res, object, pacing);
    }
    if (req.method === 'POST' && kind === 'model' && parts.length === 1)
      return uploadModel(req, res, url, record);
    if (req.method === 'POST' && kind === 'prediction' && parts.length === 1)
      return uploadPrediction(req, res, record);
    await readBody(req);
    sendJson(res, 405, { error: `${req.method} ${url.pathname} is not allowed` });
  }

  async function uploadModel(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    record: RecordedRequest,
  ) {
    const declared = req.headers['content-length'];
    const body = await readBody(req);
    record.body = { size: body.length };
    if (declared === undefined) {
      return sendJson(res, 411, { error: 'Content-Length is required: it is the blob size' });
    }
    const uuid = url.searchParams.get('uuid');
    const algo = url.searchParams.get('algo');
    if (!uuid || !algo)
      return sendJson(res, 400, { error: 'uuid and algo query parameters are required' });
    if (objects.has(key('model', uuid)))
      return sendJson(res, 409, { error: `model ${uuid} exists` });
    const meta = { uuid, algo, timestamp_upload: now() };
    objects.set(key('model', uuid), { blob: body, meta });
    sendJson(res, 201, meta);
  }

  async function uploadPrediction(
    req: IncomingMessage,
    res: ServerResponse,
    record: RecordedRequest,
  ) {
    const type = String(req.headers['content-type'] ?? '');
    const boundary = /^multipart\/form-data;.*boundary="?([^";]+)"?/i.exec(type)?.[1];
    const body = await readBody(req);
    if (!boundary)
      return sendJson(res, 400, { error: 'multipart/form-data with a boundary is required' });
    let fields: { name: string; content: Buffer }[];
    try {
      fields = parseMultipart(body, boundary);
    } catch (error) {
      return sendJson(res, 400, { error: `malformed multipart body: ${(error as Error).message}` });
    }
    const names = fields.map((f) => f.name);
    const [uuidField, sizeField, blobField] = fields;
    record.body = {
      fields: names,
      uuid: uuidField?.content.toString(),
      size: sizeField?.content.toString(),
      blobSize: blobField?.content.length,
    };
    if (names.join(',') !== 'uuid,size,blob' || !uuidField || !sizeField || !blobField) {
      return sendJson(res, 400, {
        error: `fields must be uuid, size, blob in this order; got ${names.join(', ')}`,
      });
    }
    const uuid = uuidField.content.toString();
    const size = Number(sizeField.content.toString());
    if (!Number.isSafeInteger(size) || size !== blobField.content.length) {
      return sendJson(res, 400, {
        error: `size ${sizeField.content} does not match the blob (${blobField.content.length} bytes)`,
      });
    }
    if (objects.has(key('prediction', uuid)))
      return sendJson(res, 409, { error: `prediction ${uuid} exists` });
    const meta = { uuid, size, timestamp_upload: now() };
    objects.set(key('prediction', uuid), { blob: blobField.content, meta });
    sendJson(res, 201, meta);
  }

  // As the real storage: its /health answers anyone.
  const base = await startStandIn('storage', { open: ['/health'], ...options }, route);
  return {
    ...base,
    seed(kind, uuid, object) {
      const blob = typeof object.blob === 'string' ? Buffer.from(object.blob) : object.blob;
      objects.set(key(kind, uuid), withDigest({ blob, meta: object.meta ?? { uuid } }));
    },
    pace(chunkBytes, intervalMs) {
      pacing = { chunkBytes, intervalMs };
    },
    changeBlob(kind, uuid, blob, options = {}) {
      const meta = objects.get(key(kind, uuid))?.meta ?? { uuid };
      const bytes = typeof blob === 'string' ? Buffer.from(blob) : blob;
      objects.set(key(kind, uuid), { ...withDigest({ blob: bytes, meta }), ...options });
    },
    object: (kind, uuid) => objects.get(key(kind, uuid)),
    blob(kind, uuid) {
      const blob = objects.get(key(kind, uuid))?.blob;
      return Buffer.isBuffer(blob) ? blob : undefined;
    },
  };
}

/** The digest is taken once, as the object is stored (a big file's while the test goes on). */
function withDigest(object: StoredObject): StoredObject {
  const blob = object.blob;
  if (!blob) return object;
  const digest = Buffer.isBuffer(blob)
    ? Promise.resolve(createHash('sha256').update(blob).digest('base64'))
    : (async () => {
        const hash = createHash('sha256');
        for await (const chunk of createReadStream(blob.file)) hash.update(chunk as Buffer);
        return hash.digest('base64');
      })();
  digest.catch(() => undefined);
  return { ...object, digest };
}

/** As a real storage: the bytes with Repr-Digest (RFC 9530) and a strong ETag. */
async function sendBlob(
  res: ServerResponse,
  object: StoredObject,
  pacing?: { chunkBytes: number; intervalMs: number },
) {
  const blob = object.blob as Buffer | { file: string };
  const digest = object.noValidators ? undefined : (object.wrongDigest ?? (await object.digest));
  const size = Buffer.isBuffer(blob) ? blob.length : (await stat(blob.file)).size;
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': size,
    ...(digest
      ? {
          'repr-digest': `sha-256=:${digest}:`,
          etag: `"${Buffer.from(digest, 'base64').toString('hex').slice(0, 32)}"`,
        }
      : {}),
  });
  if (Buffer.isBuffer(blob) && pacing) await sendPaced(res, blob, pacing);
  else if (Buffer.isBuffer(blob)) res.end(blob);
  // A client that reads only the headers goes away: the file is closed with the answer.
  else await pipeline(createReadStream(blob.file), res).catch(() => undefined);
}

async function sendPaced(
  res: ServerResponse,
  blob: Buffer,
  { chunkBytes, intervalMs }: { chunkBytes: number; intervalMs: number },
) {
  for (let at = 0; at < blob.length && !res.destroyed; at += chunkBytes) {
    if (at > 0) await sleep(intervalMs);
    if (!res.destroyed) res.write(blob.subarray(at, at + chunkBytes));
  }
  if (!res.destroyed) res.end();
}

/** A strict multipart/form-data parser: each part needs a Content-Disposition with a name. */
export function parseMultipart(
  body: Buffer,
  boundary: string,
): { name: string; content: Buffer }[] {
  const delimiter = Buffer.from(`--${boundary}`);
  const next = Buffer.from(`\r\n--${boundary}`);
  if (!body.subarray(0, delimiter.length).equals(delimiter))
    throw new Error('does not start with the boundary');
  const parts: { name: string; content: Buffer }[] = [];
  let pos = delimiter.length;
  for (;;) {
    const after = body.subarray(pos, pos + 2).toString('latin1');
    if (after === '--') return parts;
    if (after !== '\r\n') throw new Error('boundary not followed by CRLF');
    const headerEnd = body.indexOf('\r\n\r\n', pos + 2);
    if (headerEnd < 0) throw new Error('part headers never end');
    const headers = body.subarray(pos + 2, headerEnd).toString('latin1');
    const name = /content-disposition:\s*form-data;[^\r\n]*\bname="([^"]*)"/i.exec(headers)?.[1];
    if (name === undefined) throw new Error('part without a form-data name');
    const end = body.indexOf(next, headerEnd + 4);
    if (end < 0) throw new Error(`part "${name}" is not terminated`);
    parts.push({ name, content: body.subarray(headerEnd + 4, end) });
    pos = end + next.length;
  }
}
