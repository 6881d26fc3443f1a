import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { HttpServiceOptions } from '../../src/clients/http.js';
import { HttpOrchestratorClient } from '../../src/clients/orchestrator.js';
import { HttpStorageClient } from '../../src/clients/storage.js';
import { failure } from '../support/failed-report.js';
import { caught } from '../support/http-errors.js';
import {
  type OrchestratorServer,
  startOrchestratorServer,
} from '../support/orchestrator-server.js';
import { type StorageServer, startStorageServer } from '../support/storage-server.js';

/**
 * A service that sends too much, too slowly or forever: each call ends within seconds
 * with an error naming the bound, and the worker stops reading, which the server sees
 * as its client going away long before the answer is complete.
 */

const MiB = 1024 * 1024;
let storage: StorageServer;
let orchestrator: OrchestratorServer;
const clients: { close(): Promise<void> }[] = [];

beforeEach(async () => {
  storage = await startStorageServer();
  orchestrator = await startOrchestratorServer();
});
afterEach(async () => {
  for (const client of clients.splice(0)) await client.close();
  await storage.close();
  await orchestrator.close();
});

function storageClient(extra: Partial<HttpServiceOptions> = {}): HttpStorageClient {
  const client = new HttpStorageClient({
    host: storage.host,
    port: storage.port,
    user: 'u',
    password: 'p',
    retryDelayMs: 1,
    ...extra,
  });
  clients.push(client);
  return client;
}

function orchestratorClient(extra: Partial<HttpServiceOptions> = {}): HttpOrchestratorClient {
  const client = new HttpOrchestratorClient({
    host: orchestrator.host,
    port: orchestrator.port,
    user: 'u',
    password: 'p',
    ...extra,
  });
  clients.push(client);
  return client;
}

/** Waits until the server has seen the client leave in the middle of every answer. */
async function clientLeftEarly(server: StorageServer | OrchestratorServer) {
  await vi.waitFor(
    () => {
      expect(server.requests.length).toBeGreaterThan(0);
      for (const request of server.requests) expect(request.completed).toBe(false);
    },
    { timeout: 5_000 },
  );
}

describe('bounded JSON answers', () => {
  it('stops reading a 150 MiB metadata answer at the 1 MiB cap, as the service’s fault', async () => {
    const uuid = randomUUID();
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    storage.fault(`/model/${uuid}`, {
      stream: { status: 200, chunk, count: 2400, contentType: 'application/json' },
    });
    const error = await caught(storageClient().getModelMetadata(uuid));
    expect(error.code).toBe('STORAGE_FAILED');
    expect(error.message).toBe(
      `storage GET /model/${uuid}: the answer is larger than ${MiB} bytes, the most a JSON answer may be`,
    );
    // The task is fine; the service is not: it is tried again later.
    expect(error.retryable).toBe(true);
    await clientLeftEarly(storage);
    expect(storage.requests).toHaveLength(1);
    expect(storage.requests[0]?.sent).toBeLessThan(32 * MiB);
  });

  it('refuses an answer announced larger than the cap without reading it', async () => {
    const uuid = randomUUID();
    storage.fault(`/data/${uuid}`, {
      stream: {
        status: 200,
        chunk: Buffer.alloc(64 * 1024, 0x20),
        count: 2400,
        length: 2400 * 64 * 1024,
        contentType: 'application/json',
      },
    });
    const error = await caught(storageClient().getMetadata('data', uuid));
    expect(error.message).toContain(`the answer is larger than ${MiB} bytes`);
    await clientLeftEarly(storage);
    expect(storage.requests[0]?.sent).toBeLessThan(32 * MiB);
  });

  it('takes an answer just under the cap', async () => {
    const uuid = randomUUID();
    const text = JSON.stringify({ uuid, pad: 'x'.repeat(MiB - 100) });
    storage.seed('data', uuid, { meta: JSON.parse(text) });
    expect(await storageClient().getMetadata('data', uuid)).toMatchObject({ uuid });
  });
});

describe('total deadlines', () => {
  it('ends a metadata answer dripping a byte every 400 ms at its deadline', async () => {
    const uuid = randomUUID();
    storage.fault(`/data/${uuid}`, {
      stream: { status: 200, chunk: ' ', intervalMs: 400, contentType: 'application/json' },
    });
    const client = storageClient({ deadlineMs: 1500, timeoutMs: 30_000 });
    const error = await caught(client.getMetadata('data', uuid));
    expect(error.code).toBe('STORAGE_FAILED');
    expect(error.message).toBe(
      `storage GET /data/${uuid}: the call did not finish in time (deadline 1500 ms) (${storage.host}:${storage.port})`,
    );
    expect(error.retryable).toBe(true);
    // Not tried again within the call: that try already used the whole deadline.
    expect(storage.requests).toHaveLength(1);
    await clientLeftEarly(storage);
  });

  it('ends a blob download that drips, though every byte resets the silence timeout', async () => {
    const uuid = randomUUID();
    storage.fault(`/data/${uuid}/blob`, {
      stream: { status: 200, chunk: 'x', intervalMs: 400, length: 1000 },
    });
    const client = storageClient({ deadlineMs: 1000, minTransferRate: MiB, timeoutMs: 30_000 });
    const blob = await client.getBlob('data', uuid);
    expect(blob.size).toBe(1000);
    const error = await caught(blob.stream.toArray());
    expect(error.message).toMatch(
      /^storage GET \/data\/.*\/blob: the transfer was slower than 1048576 bytes a second on average \(deadline 10\d\d ms\)/,
    );
    expect(error.retryable).toBe(true);
    await clientLeftEarly(storage);
  });

  it('lets a blob download run past the base deadline while it keeps the minimum rate', async () => {
    const uuid = randomUUID();
    // 40 chunks of 64 KiB, one every 50 ms: about 1.3 MiB/s for about 2 s.
    storage.fault(`/data/${uuid}/blob`, {
      stream: { status: 200, chunk: Buffer.alloc(64 * 1024, 1), intervalMs: 50, count: 40 },
    });
    const client = storageClient({ deadlineMs: 500, minTransferRate: 128 * 1024 });
    const blob = await client.getBlob('data', uuid);
    expect(blob.size).toBeUndefined();
    const bytes = Buffer.concat(await blob.stream.toArray()).length;
    expect(bytes).toBe(40 * 64 * 1024);
  });

  it('ends an orchestrator claim whose answer never starts at its deadline', async () => {
    const uuid = randomUUID();
    orchestrator.fault(`/worker/learnuplet/${uuid}`, { delayMs: 60_000 });
    const client = orchestratorClient({ deadlineMs: 1000, timeoutMs: 30_000 });
    const error = await caught(client.claim('learnuplet', uuid, 'w'));
    expect(error.code).toBe('ORCHESTRATOR_FAILED');
    expect(error.message).toContain('the call did not finish in time (deadline 1000 ms)');
    await clientLeftEarly(orchestrator);
  });
});

describe('error answers with endless bodies', () => {
  it('reads a few KiB of a 500 that never ends, and reports the status', async () => {
    const uuid = randomUUID();
    storage.fault(`/data/${uuid}`, {
      stream: { status: 500, chunk: Buffer.alloc(64 * 1024, 0x41), contentType: 'text/plain' },
    });
    const error = await caught(storageClient().getMetadata('data', uuid));
    expect(error.message).toMatch(new RegExp(`^storage GET /data/${uuid} answered 500: A{300}$`));
    expect(error.retryable).toBe(true);
    expect(storage.requests).toHaveLength(3); // a GET is tried again after a 5xx
    await clientLeftEarly(storage);
  });

  it('shows the control characters of a service’s words as escapes', async () => {
    const uuid = randomUUID();
    storage.fault(`/data/${uuid}`, { status: 400, body: { error: '\x1b]0;title\x07\x1b[2Jbad' } });
    const error = await caught(storageClient().getMetadata('data', uuid));
    expect(error.message).toBe(
      `storage GET /data/${uuid} answered 400: \\x1b]0;title\\x07\\x1b[2Jbad`,
    );
  });

  it('reads a few KiB of an endless 400 to a report', async () => {
    const uuid = randomUUID();
    orchestrator.fault(`/learndone/${uuid}`, {
      stream: { status: 400, chunk: Buffer.alloc(64 * 1024, 0x42), contentType: 'text/plain' },
    });
    const error = await caught(orchestratorClient().reportFailed('learn', uuid, failure('x')));
    expect(error.code).toBe('ORCHESTRATOR_FAILED');
    expect(error.message).toContain(`/learndone/${uuid} answered 400: BBBB`);
    expect(error.retryable).toBe(false);
    await clientLeftEarly(orchestrator);
  });

  it('does not drain an endless success answer to a report', async () => {
    const uuid = randomUUID();
    orchestrator.fault(`/learndone/${uuid}`, {
      stream: { status: 200, chunk: Buffer.alloc(64 * 1024, 0x20) },
    });
    await orchestratorClient().reportFailed('learn', uuid, failure('x'));
    await clientLeftEarly(orchestrator);
  });
});
