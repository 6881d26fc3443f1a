import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createOrchestratorClient,
  createStorageClient,
  readPasswordFile,
} from '../../src/clients/config.js';
import { LocalOrchestratorClient } from '../../src/clients/local-orchestrator.js';
import { describeLocalStorageLayout, LocalStorageClient } from '../../src/clients/local-storage.js';
import { HttpOrchestratorClient } from '../../src/clients/orchestrator.js';
import { HttpStorageClient } from '../../src/clients/storage.js';
import { failure } from '../support/failed-report.js';
import { caught } from '../support/http-errors.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'local-services-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function text(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('LocalStorageClient', () => {
  it('serves blobs and metadata from a folder filled by hand', async () => {
    const model = randomUUID();
    const algo = randomUUID();
    await mkdir(join(dir, 'model', model), { recursive: true });
    await writeFile(join(dir, 'model', model, 'blob'), 'model bytes');
    await writeFile(join(dir, 'model', model, 'meta.json'), JSON.stringify({ uuid: model, algo }));
    const data = randomUUID();
    await mkdir(join(dir, 'data', data), { recursive: true });
    await writeFile(join(dir, 'data', data, 'blob'), 'a,b\n1,2\n');

    const storage = new LocalStorageClient(dir);
    await storage.health();
    expect(storage.description).toBe(`local storage ${dir}`);
    expect(await storage.getModelMetadata(model)).toEqual({ uuid: model, algo });
    expect(await storage.getMetadata('data', data)).toEqual({ uuid: data }); // meta.json is optional
    const blob = await storage.getBlob('data', data);
    expect(blob.size).toBe(8);
    expect((await text(blob.stream)).toString()).toBe('a,b\n1,2\n');
  });

  it('names the missing file and the layout when a blob is missing', async () => {
    const storage = new LocalStorageClient(dir);
    const uuid = randomUUID();
    const error = await caught(storage.getBlob('algo', uuid));
    expect(error.code).toBe('STORAGE_FAILED');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain(join(dir, 'algo', uuid, 'blob'));
    expect(error.detail).toBe(describeLocalStorageLayout());
    expect(describeLocalStorageLayout()).toContain('<dir>/<kind>/<uuid>/blob');
  });

  it('says how to give a model its algo when its metadata is missing', async () => {
    const model = randomUUID();
    await mkdir(join(dir, 'model', model), { recursive: true });
    await writeFile(join(dir, 'model', model, 'blob'), 'x');
    const error = await caught(new LocalStorageClient(dir).getModelMetadata(model));
    expect(error.hint).toContain(join(dir, 'model', model, 'meta.json'));
  });

  it('refuses a uuid that would climb out of the folder', async () => {
    const error = await caught(new LocalStorageClient(dir).getBlob('data', '../../etc'));
    expect(error.message).toContain('cannot name a data');
  });

  it('explains a storage folder that does not exist', async () => {
    const error = await caught(new LocalStorageClient(join(dir, 'nope')).health());
    expect(error.message).toContain('does not exist');
    expect(error.hint).toContain('--storage-dir');
  });

  it('stores an uploaded model with its metadata, leaving no temporary file', async () => {
    const storage = new LocalStorageClient(dir);
    const model = randomUUID();
    const algo = randomUUID();
    const data = randomBytes(100_000);
    await storage.uploadModel(
      model,
      algo,
      Readable.from([data.subarray(0, 10), data.subarray(10)]),
      data.length,
    );
    const folder = join(dir, 'model', model);
    expect((await readdir(folder)).sort()).toEqual(['blob', 'meta.json']);
    expect(
      createHash('sha1')
        .update(await readFile(join(folder, 'blob')))
        .digest('hex'),
    ).toBe(createHash('sha1').update(data).digest('hex'));
    const meta = JSON.parse(await readFile(join(folder, 'meta.json'), 'utf8'));
    expect(meta).toEqual({ uuid: model, algo, timestamp_upload: expect.any(Number) });
    expect(await storage.getModelMetadata(model)).toMatchObject({ uuid: model, algo });
  });

  it('keeps no blob when the model is shorter than announced', async () => {
    const storage = new LocalStorageClient(dir);
    const model = randomUUID();
    const error = await caught(
      storage.uploadModel(model, randomUUID(), Readable.from([Buffer.alloc(3)]), 4),
    );
    expect(error.message).toContain('3 bytes arrived, 4 were announced');
    expect(await readdir(join(dir, 'model', model))).toEqual([]);
  });

  it('stores a prediction with its size, and accepts the same one twice but not another', async () => {
    const storage = new LocalStorageClient(dir);
    const file = join(dir, 'pred.csv');
    await writeFile(file, '0\n1\n');
    const uuid = randomUUID();
    await storage.uploadPrediction(uuid, file);
    await storage.uploadPrediction(uuid, file);
    const meta = JSON.parse(await readFile(join(dir, 'prediction', uuid, 'meta.json'), 'utf8'));
    expect(meta).toEqual({ uuid, size: 4, timestamp_upload: expect.any(Number) });
    expect(await readFile(join(dir, 'prediction', uuid, 'blob'), 'utf8')).toBe('0\n1\n');
    await writeFile(file, '0\n1\n1\n');
    expect((await caught(storage.uploadPrediction(uuid, file))).message).toContain(
      'different prediction',
    );
  });
});

describe('LocalOrchestratorClient', () => {
  it('appends one JSON line per report, with the failure reason', async () => {
    const ledger = join(dir, 'state', 'orchestrator.jsonl');
    const orchestrator = new LocalOrchestratorClient(ledger);
    const learn = randomUUID();
    const predict = randomUUID();
    const worker = randomUUID();
    await orchestrator.claim('learnuplet', learn, worker);
    await orchestrator.learnDone(learn, { perf: 0.5, train_perf: { a: 1 }, test_perf: { b: 0 } });
    await orchestrator.claim('preduplet', predict, worker);
    await orchestrator.reportFailed('predict', predict, failure('predict step exited with code 1'));
    const lines = (await readFile(ledger, 'utf8'))
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toEqual([
      { time: expect.any(String), call: `/worker/learnuplet/${learn}`, body: { worker } },
      {
        time: expect.any(String),
        call: `/learndone/${learn}`,
        body: { status: 'done', perf: 0.5, train_perf: { a: 1 }, test_perf: { b: 0 } },
      },
      { time: expect.any(String), call: `/worker/preduplet/${predict}`, body: { worker } },
      {
        time: expect.any(String),
        call: `/preddone/${predict}`,
        body: { status: 'failed', ...failure('predict step exited with code 1') },
        reason: 'predict step exited with code 1',
      },
    ]);
    expect(Number.isNaN(Date.parse(lines[0].time))).toBe(false);
  });

  it('refuses to claim a task the ledger shows done, and allows one that failed', async () => {
    const orchestrator = new LocalOrchestratorClient(join(dir, 'ledger.jsonl'));
    const done = randomUUID();
    const failed = randomUUID();
    await orchestrator.predDone(done, randomUUID());
    await orchestrator.reportFailed('learn', failed, failure('boom'));
    const error = await caught(orchestrator.claim('preduplet', done, randomUUID()));
    expect(error.code).toBe('TASK_TAKEN');
    expect(error.retryable).toBe(false);
    await orchestrator.claim('learnuplet', failed, randomUUID());
    await orchestrator.claim('learnuplet', done, randomUUID()); // a learn task of that uuid was never done
  });

  it('explains a ledger it cannot write', async () => {
    await writeFile(join(dir, 'file'), '');
    const orchestrator = new LocalOrchestratorClient(join(dir, 'file', 'ledger.jsonl'));
    const error = await caught(
      orchestrator.learnDone(randomUUID(), { perf: 1, train_perf: {}, test_perf: {} }),
    );
    expect(error.code).toBe('ORCHESTRATOR_FAILED');
    expect(error.hint).toContain('--orchestrator-ledger');
  });
});

describe('service configuration', () => {
  const service = { port: 80, user: 'u', password: 'p' };

  it('uses the local services when the host is blank, and HTTP otherwise', async () => {
    const storage = createStorageClient({ ...service, host: ' ', localDir: dir });
    expect(storage).toBeInstanceOf(LocalStorageClient);
    const remote = createStorageClient({
      ...service,
      host: 'https://storage.example.org',
      localDir: dir,
    });
    expect(remote).toBeInstanceOf(HttpStorageClient);
    expect(remote.description).toBe('storage https://storage.example.org');
    const ledger = createOrchestratorClient({
      ...service,
      host: '',
      ledgerFile: join(dir, 'l.jsonl'),
    });
    expect(ledger).toBeInstanceOf(LocalOrchestratorClient);
    const orchestrator = createOrchestratorClient({
      ...service,
      host: 'orch',
      port: 8000,
      ledgerFile: '',
    });
    expect(orchestrator).toBeInstanceOf(HttpOrchestratorClient);
    expect(orchestrator.description).toBe('orchestrator http://orch:8000');
    await Promise.all([storage.close(), remote.close(), ledger.close(), orchestrator.close()]);
  });

  it('reads a password file without its one trailing newline', async () => {
    const file = join(dir, 'password');
    await writeFile(file, ' pass word \n\n');
    expect(await readPasswordFile(file)).toBe(' pass word \n');
    await writeFile(file, 'secret\r\n');
    expect(await readPasswordFile(file)).toBe('secret');
    await writeFile(file, 'secret');
    expect(await readPasswordFile(file)).toBe('secret');
  });

  it('names a password file it cannot read', async () => {
    const error = await caught(readPasswordFile(join(dir, 'missing')));
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.message).toBe(`cannot read the password file ${join(dir, 'missing')}`);
  });
});
