import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { HttpStorageClient } from '../../src/clients/storage.js';
import { WorkerError } from '../../src/errors.js';
import { caught } from '../support/http-errors.js';
import { closedPort } from '../support/http-stand-in.js';
import { type StorageServer, startStorageServer } from '../support/storage-server.js';

let server: StorageServer;
let client: HttpStorageClient;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storage-client-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  server = await startStorageServer({ user: 'alice', password: 's3cret' });
  client = new HttpStorageClient({
    host: server.host,
    port: server.port,
    user: 'alice',
    password: 's3cret',
    retryDelayMs: 10,
  });
});
afterEach(async () => {
  await client.close();
  await server.close();
});

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function digestOf(stream: Readable): Promise<{ digest: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { digest: hash.digest('hex'), bytes };
}

describe('HttpStorageClient downloads', () => {
  it('answers the health route', async () => {
    await client.health();
    expect(server.requests[0]).toMatchObject({ method: 'GET', path: '/health', status: 200 });
    expect(client.description).toBe(`storage http://127.0.0.1:${server.port}`);
  });

  it('streams a blob byte for byte, with its size, sending Basic Auth', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const file = join(dir, 'data.bin');
    await writeFile(file, data);
    const uuid = randomUUID();
    server.seed('data', uuid, { blob: { file } });
    const blob = await client.getBlob('data', uuid);
    expect(blob.size).toBe(data.length);
    expect(await digestOf(blob.stream)).toEqual({ digest: sha256(data), bytes: data.length });
    expect(server.requests[0]?.path).toBe(`/data/${uuid}/blob`);
    expect(server.requests[0]?.headers).not.toHaveProperty('authorization');
  });

  it('stops the download when the reader destroys the stream', async () => {
    const file = join(dir, 'big.bin');
    await writeFile(file, Buffer.alloc(16 * 1024 * 1024, 1));
    const uuid = randomUUID();
    server.seed('data', uuid, { blob: { file } });
    const blob = await client.getBlob('data', uuid);
    for await (const _chunk of blob.stream) break; // for-await destroys the stream on break
    await vi.waitFor(() => expect(server.requests[0]?.completed).toBe(false), { timeout: 10_000 });
  });

  it("reads a blob's digest and ETag without its bytes, and hands them on with a download", async () => {
    const data = randomBytes(1024 * 1024);
    const uuid = randomUUID();
    server.seed('data', uuid, { blob: data });
    server.pace(64 * 1024, 20);
    const sha = createHash('sha256').update(data).digest('base64');
    const probed = await client.blobValidators('data', uuid);
    expect(probed).toEqual({
      sha256: sha,
      etag: expect.stringMatching(/^"[0-9a-f]+"$/),
      size: data.length,
    });
    await vi.waitFor(() => expect(server.requests[0]?.completed).toBe(false), { timeout: 10_000 });
    const blob = await client.getBlob('data', uuid);
    expect(blob.validators).toEqual(probed);
    blob.stream.destroy();
  });

  it('turns an abort mid-download into a CANCELLED error on the stream', async () => {
    const file = join(dir, 'big2.bin');
    await writeFile(file, Buffer.alloc(16 * 1024 * 1024, 2));
    const uuid = randomUUID();
    server.seed('data', uuid, { blob: { file } });
    const controller = new AbortController();
    const blob = await client.getBlob('data', uuid, controller.signal);
    const error = await caught(
      (async () => {
        for await (const _chunk of blob.stream) controller.abort();
      })(),
    );
    expect(error.code).toBe('CANCELLED');
  });

  it('reads metadata, and validates model metadata', async () => {
    const model = randomUUID();
    const algo = randomUUID();
    server.seed('model', model, { meta: { uuid: model, algo, timestamp_upload: 1, extra: true } });
    expect(await client.getModelMetadata(model)).toEqual({
      uuid: model,
      algo,
      timestamp_upload: 1,
    });
    const bad = randomUUID();
    server.seed('model', bad, { meta: { uuid: bad } });
    const error = await caught(client.getModelMetadata(bad));
    expect(error.message).toContain(`metadata of model ${bad} is unusable`);
    expect(error.detail).toContain('"algo"');
  });

  it('says clearly that storage has no such object, and not to retry', async () => {
    const uuid = randomUUID();
    const error = await caught(client.getBlob('data', uuid));
    expect(error.code).toBe('STORAGE_FAILED');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain(`storage has no data ${uuid}`);
    expect(error.message).toContain(`data ${uuid} not found`); // the service's own words
    expect(server.requests).toHaveLength(1);
  });

  it('refuses to go on with a wrong password, naming the flags and not the password', async () => {
    const wrong = new HttpStorageClient({
      host: server.host,
      port: server.port,
      user: 'alice',
      password: 'nope',
    });
    const error = await caught(wrong.getMetadata('data', randomUUID()));
    await wrong.close();
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('refused the credentials');
    expect(error.hint).toBe('check --storage-user/--storage-password');
    expect(error.describe()).not.toContain('nope');
  });

  it('is refused its credentials before any fault of the path shows', async () => {
    const wrong = new HttpStorageClient({
      host: server.host,
      port: server.port,
      user: 'alice',
      password: 'nope',
    });
    const uuid = randomUUID();
    server.fault(`/data/${uuid}`, { status: 503 });
    const error = await caught(wrong.getMetadata('data', uuid));
    await wrong.close();
    expect(error.message).toContain('refused the credentials');
    expect(server.requests.map((r) => r.status)).toEqual([401]);
  });

  it('tries a GET again after a 5xx, and reports a lasting 5xx as retryable', async () => {
    const uuid = randomUUID();
    server.seed('data', uuid, { meta: { uuid, name: 'x' } });
    server.fault(`/data/${uuid}`, { status: 503, times: 2 });
    expect(await client.getMetadata('data', uuid)).toEqual({ uuid, name: 'x' });
    expect(server.requests.map((r) => r.status)).toEqual([503, 503, 200]);

    server.fault(`/data/${uuid}`, { status: 500, body: { error: 'disk on fire' } });
    const error = await caught(client.getMetadata('data', uuid));
    expect(error.retryable).toBe(true);
    expect(error.message).toBe(`storage GET /data/${uuid} answered 500: disk on fire`);
  });

  it('reports a connection refused as retryable, naming the path', async () => {
    const port = await closedPort();
    const refused = new HttpStorageClient({
      host: '127.0.0.1',
      port,
      user: 'u',
      password: 'p',
      retryDelayMs: 1,
    });
    const error = await caught(refused.getBlob('algo', 'abc'));
    await refused.close();
    expect(error.code).toBe('STORAGE_FAILED');
    expect(error.retryable).toBe(true);
    expect(error.message).toBe(
      `storage GET /algo/abc/blob: connection refused (127.0.0.1:${port})`,
    );
    expect(error.hint).toContain('--storage-host/--storage-port');
  });

  it('reports a connection closed mid-answer as retryable', async () => {
    server.fault('/health', { close: true });
    const error = await caught(client.health());
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/^storage GET \/health: /);
  });
});

describe('HttpStorageClient uploads', () => {
  it('streams a model with its exact Content-Length and answers 201', async () => {
    const data = randomBytes(300_000);
    const uuid = randomUUID();
    const algo = randomUUID();
    const chunks = [data.subarray(0, 1000), data.subarray(1000, 200_000), data.subarray(200_000)];
    await client.uploadModel(uuid, algo, Readable.from(chunks), data.length);
    const request = server.requests[0];
    expect(request?.path).toBe(`/model?uuid=${uuid}&algo=${algo}`);
    expect(request?.headers['content-length']).toBe(String(data.length));
    expect(request?.headers['transfer-encoding']).toBeUndefined();
    expect(request?.status).toBe(201);
    expect(sha256(server.blob('model', uuid) as Buffer)).toBe(sha256(data));
    expect(server.object('model', uuid)?.meta).toMatchObject({ uuid, algo });
  });

  it('counts a 409 for a model uuid storage holds as uploaded, keeping the first model', async () => {
    const uuid = randomUUID();
    const algo = randomUUID();
    await client.uploadModel(uuid, algo, Readable.from([Buffer.from('first')]), 5);
    await client.uploadModel(uuid, algo, Readable.from([Buffer.from('again!')]), 6);
    expect(server.requests.map((r) => r.status)).toEqual([201, 409]);
    expect(server.blob('model', uuid)?.toString()).toBe('first');
  });

  it('fails, and stores nothing, when the model is shorter than announced', async () => {
    const uuid = randomUUID();
    const error = await caught(
      client.uploadModel(uuid, randomUUID(), Readable.from([Buffer.alloc(10)]), 20),
    );
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(
      /^storage POST \/model\?uuid=.*: the body sent did not match its announced length$/,
    );
    expect(server.object('model', uuid)).toBeUndefined();
  });

  it('keeps the error of the model stream itself', async () => {
    const body = new Readable({
      read() {
        this.destroy(new WorkerError('ARCHIVE_REJECTED', 'model folder holds a device file'));
      },
    });
    const error = await caught(client.uploadModel(randomUUID(), randomUUID(), body, 100));
    expect(error.code).toBe('ARCHIVE_REJECTED');
  });

  it('uploads a prediction as multipart uuid, size, blob with its Content-Length', async () => {
    const data = randomBytes(200_000);
    const file = join(dir, 'pred.csv');
    await writeFile(file, data);
    const uuid = randomUUID();
    await client.uploadPrediction(uuid, file);
    const request = server.requests[0];
    expect(request?.status).toBe(201);
    expect(request?.body).toEqual({
      fields: ['uuid', 'size', 'blob'],
      uuid,
      size: String(data.length),
      blobSize: data.length,
    });
    expect(Number(request?.headers['content-length'])).toBeGreaterThan(data.length);
    expect(sha256(server.blob('prediction', uuid) as Buffer)).toBe(sha256(data));
  });

  it('uploads an empty prediction file', async () => {
    const file = join(dir, 'empty.csv');
    await writeFile(file, '');
    const uuid = randomUUID();
    await client.uploadPrediction(uuid, file);
    expect(server.object('prediction', uuid)?.meta).toMatchObject({ uuid, size: 0 });
  });

  it('accepts a 409 for its own earlier upload, and refuses a different prediction under its uuid', async () => {
    const file = join(dir, 'pred2.csv');
    await writeFile(file, 'a,b\n1,2\n');
    const uuid = randomUUID();
    await client.uploadPrediction(uuid, file);
    await client.uploadPrediction(uuid, file); // the answer to the first one was "lost"
    expect(server.requests.map((r) => `${r.method} ${r.path} ${r.status}`)).toEqual([
      'POST /prediction 201',
      'POST /prediction 409',
      `GET /prediction/${uuid} 200`,
    ]);
    await writeFile(file, 'something else entirely\n');
    const error = await caught(client.uploadPrediction(uuid, file));
    expect(error.retryable).toBe(false);
    expect(error.message).toContain(`different prediction ${uuid}`);
  });

  it('says which prediction file is missing', async () => {
    const error = await caught(client.uploadPrediction(randomUUID(), join(dir, 'nothing')));
    expect(error.code).toBe('PREDICTION_MISSING');
    expect(error.message).toContain(join(dir, 'nothing'));
    expect(server.requests).toHaveLength(0);
  });

  it('does not send an upload twice after a 5xx', async () => {
    server.fault('/model', { status: 502 });
    const error = await caught(
      client.uploadModel(randomUUID(), randomUUID(), Readable.from([Buffer.alloc(5)]), 5),
    );
    expect(error.retryable).toBe(true);
    expect(server.requests).toHaveLength(1);
  });
});
