import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HttpOrchestratorClient } from '../../src/clients/orchestrator.js';
import { failure } from '../support/failed-report.js';
import { caught } from '../support/http-errors.js';
import { closedPort } from '../support/http-stand-in.js';
import {
  type OrchestratorServer,
  startOrchestratorServer,
} from '../support/orchestrator-server.js';

let server: OrchestratorServer;
let client: HttpOrchestratorClient;
const worker = randomUUID();

beforeEach(async () => {
  server = await startOrchestratorServer({ user: 'orch', password: 'pw' });
  client = new HttpOrchestratorClient({
    host: `http://${server.host}`,
    port: server.port,
    user: 'orch',
    password: 'pw',
  });
});
afterEach(async () => {
  await client.close();
  await server.close();
});

describe('HttpOrchestratorClient', () => {
  it('claims a learn task, then reports it done with its performance', async () => {
    const uuid = randomUUID();
    const data = randomUUID();
    server.addTask('learnuplet', uuid);
    await client.claim('learnuplet', uuid, worker);
    expect(server.task(uuid)).toMatchObject({ status: 'pending', worker });
    await client.learnDone(uuid, {
      perf: 0.91,
      train_perf: { [data]: 0.9 },
      test_perf: { [data]: 0.8 },
    });
    expect(server.task(uuid)?.status).toBe('done');
    expect(server.requests.map((r) => [r.method, r.path, r.body, r.status])).toEqual([
      ['POST', `/worker/learnuplet/${uuid}`, { worker }, 200],
      [
        'POST',
        `/learndone/${uuid}`,
        { status: 'done', perf: 0.91, train_perf: { [data]: 0.9 }, test_perf: { [data]: 0.8 } },
        200,
      ],
    ]);
    expect(server.requests[1]?.headers['content-type']).toBe('application/json');
  });

  it('claims a predict task, then reports its prediction id', async () => {
    const uuid = randomUUID();
    const prediction = randomUUID();
    server.addTask('preduplet', uuid);
    await client.claim('preduplet', uuid, worker);
    await client.predDone(uuid, prediction);
    expect(server.task(uuid)).toMatchObject({
      status: 'done',
      report: { status: 'done', prediction_storage_uuid: prediction },
    });
    expect(server.requests[1]?.path).toBe(`/preddone/${uuid}`);
  });

  it('says TASK_TAKEN, not to retry, when the task is no longer todo', async () => {
    const uuid = randomUUID();
    server.addTask('learnuplet', uuid);
    await client.claim('learnuplet', uuid, randomUUID());
    const error = await caught(client.claim('learnuplet', uuid, worker));
    expect(error.code).toBe('TASK_TAKEN');
    expect(error.retryable).toBe(false);
    expect(error.detail).toContain('is pending, not todo');
  });

  it('reports a failure with its error (SPEC.md section 7) on a single-slash path', async () => {
    const learn = randomUUID();
    const predict = randomUUID();
    server.addTask('learnuplet', learn);
    server.addTask('preduplet', predict, 'pending');
    await client.reportFailed('learn', learn, failure('train step exited with code 2'));
    await client.reportFailed('predict', predict, failure('no prediction file'));
    expect(server.requests.map((r) => [r.path, r.body])).toEqual([
      [`/learndone/${learn}`, { status: 'failed', ...failure('train step exited with code 2') }],
      [`/preddone/${predict}`, { status: 'failed', ...failure('no prediction file') }],
    ]);
    expect(server.task(learn)?.status).toBe('failed');
    expect(server.task(predict)?.status).toBe('failed');
  });

  it('explains a wrong password with the flags to check', async () => {
    const wrong = new HttpOrchestratorClient({
      host: server.host,
      port: server.port,
      user: 'orch',
      password: 'bad',
    });
    const error = await caught(wrong.claim('learnuplet', randomUUID(), worker));
    await wrong.close();
    expect(error.code).toBe('ORCHESTRATOR_FAILED');
    expect(error.retryable).toBe(false);
    expect(error.hint).toBe('check --orchestrator-user/--orchestrator-password');
  });

  it('reports a 5xx as retryable and does not repeat the report itself', async () => {
    const uuid = randomUUID();
    server.addTask('preduplet', uuid, 'pending');
    server.fault(`/preddone/${uuid}`, { status: 503, times: 1 });
    const error = await caught(client.predDone(uuid, randomUUID()));
    expect(error.retryable).toBe(true);
    expect(error.message).toBe(
      `orchestrator POST /preddone/${uuid} answered 503: injected fault 503`,
    );
    expect(server.requests).toHaveLength(1);
    expect(server.task(uuid)?.status).toBe('pending');
  });

  it('reports an unknown task as not retryable', async () => {
    const uuid = randomUUID();
    const error = await caught(client.learnDone(uuid, { perf: 1, train_perf: {}, test_perf: {} }));
    expect(error.retryable).toBe(false);
    expect(error.message).toContain(`orchestrator has no learnuplet ${uuid}`);
  });

  it('reports a refused connection as retryable', async () => {
    const port = await closedPort();
    const refused = new HttpOrchestratorClient({
      host: '127.0.0.1',
      port,
      user: 'u',
      password: 'p',
    });
    await expect(refused.claim('preduplet', 'abc', worker)).rejects.toMatchObject({
      retryable: true,
      message: `orchestrator POST /worker/preduplet/abc: connection refused (127.0.0.1:${port})`,
    });
    await refused.close();
  });
});
