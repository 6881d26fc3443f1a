import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { beforeAll, describe, expect, it } from 'vitest';
import { RawNsqClient } from '../support/nsq/index.js';
import { predictTask, type SeededTask } from '../support/worker-fixtures.js';
import {
  claimsOf,
  commandsFor,
  deliveriesOf,
  type Harness,
  reportsOf,
  TOPIC,
  useHarness,
} from '../support/worker-harness.js';
import {
  hasPodman,
  isError,
  requireEngines,
  type WorkerProcess,
} from '../support/worker-process.js';

// One worker, every failure class at once: each message must end the way its class
// says, seen from nsqd (FIN, REQ, deliveries), the orchestrator and the storage.

describe.skipIf(!hasPodman && !requireEngines)('outcome of each failure class', () => {
  let h: Harness;
  useHarness(
    { msgTimeoutMs: 10_000 },
    (started) => {
      h = started;
    },
    { allowedWithoutTask: ['invalid task message'] },
  );
  let worker: WorkerProcess;
  const ids = new Map<string, string>();
  let permanent: SeededTask;
  let transient: SeededTask;
  let exhausted: SeededTask;
  let taken: SeededTask;
  let takenRedelivered: SeededTask;
  const invalidUuid = randomUUID();
  // Invalid messages on the learn topic: one with a predict task's fields, one a learn task.
  const predictOnTrainUuid = randomUUID();
  const learnOnTrainUuid = randomUUID();

  const publish = (name: string, body: string) => {
    const [id] = h.nsqd.publish(TOPIC.predict, body);
    ids.set(name, id as string);
  };
  const id = (name: string) => ids.get(name) as string;
  const deliveries = (name: string) =>
    deliveriesOf(h.nsqd.stats(), TOPIC.predict, id(name)).map((d) => d.attempts);
  const commands = (name: string) => commandsFor(h.nsqd, id(name)).map((c) => c.name);
  const storageHits = (data: string) => h.storage.requests.filter((r) => r.path.includes(data));

  beforeAll(async () => {
    const t = (behaviour = {}) => predictTask(h.storage, h.orchestrator, h.fixtures, behaviour);
    permanent = t({ exit: 3 });
    transient = t();
    exhausted = t();
    taken = t();
    takenRedelivered = t();
    h.orchestrator.addTask('preduplet', taken.uuid, 'pending');
    h.orchestrator.addTask('preduplet', takenRedelivered.uuid, 'pending');
    h.orchestrator.addTask('preduplet', invalidUuid);
    h.orchestrator.addTask('preduplet', predictOnTrainUuid);
    h.orchestrator.addTask('learnuplet', learnOnTrainUuid);
    // More 503s than the client's own three GET tries: the first delivery fails.
    h.storage.fault(`/data/${transient.data}/blob`, { status: 503, times: 3 });
    h.storage.fault(`/data/${exhausted.data}/blob`, { status: 503 });

    // A consumer that dies after a first delivery: the worker sees attempts 2.
    publish('takenRedelivered', takenRedelivered.body);
    const other = await RawNsqClient.connect(h.nsqd.tcpPort);
    other.send(`SUB ${TOPIC.predict} compute`);
    expect((await other.next()).data).toBe('OK');
    other.send('RDY 1');
    const first = await other.next();
    expect(first.message?.id).toBe(id('takenRedelivered'));
    other.send('RDY 0');
    other.send(`REQ ${first.message?.id} 0`);
    other.close();
    await h.nsqd.waitFor(
      (s) => s.connections.length === 0,
      10_000,
      'the other consumer gone, nothing else delivered to it',
    );

    publish('permanent', permanent.body);
    publish('transient', transient.body);
    publish('exhausted', exhausted.body);
    publish('taken', taken.body);
    publish('unparseable', '{"uuid": not json');
    publish(
      'invalid',
      JSON.stringify({ uuid: invalidUuid, model: 'not-a-uuid', data: randomUUID() }),
    );
    const [predictOnTrain] = h.nsqd.publish(
      TOPIC.learn,
      JSON.stringify({ uuid: predictOnTrainUuid, model: randomUUID(), data: randomUUID() }),
    );
    ids.set('predictOnTrain', predictOnTrain as string);
    const [learnOnTrain] = h.nsqd.publish(
      TOPIC.learn,
      JSON.stringify({
        uuid: learnOnTrainUuid,
        workflow: randomUUID(),
        algo: randomUUID(),
        model_end: randomUUID(),
        train_data: ['not-a-uuid'],
        test_data: [randomUUID()],
      }),
    );
    ids.set('learnOnTrain', learnOnTrain as string);

    worker = await h.fleet.start(
      await h.args(['--predict-parallelism', '3', '--max-attempts', '2']),
      { env: h.env },
    );
    // Every message answered for good: finished, none in flight or waiting.
    await h.nsqd.waitFor(
      (s) => {
        const ch = s.topics.find((x) => x.name === TOPIC.predict)?.channels[0];
        const learn = s.topics.find((x) => x.name === TOPIC.learn)?.channels[0];
        return (
          ch !== undefined &&
          ch.finishCount === 7 &&
          ch.depth + ch.inFlight + ch.deferred === 0 &&
          learn?.finishCount === 2
        );
      },
      240_000,
      'all nine messages finished',
    );
  });

  it('a failing submission is reported failed once, finished, never delivered again', () => {
    // SPEC.md section 7: why, whose fault, the submission's last lines, what it cost.
    expect(reportsOf(h.orchestrator, permanent.uuid).map((r) => r.body)).toEqual([
      {
        status: 'failed',
        error: {
          code: 'CONTAINER_FAILED',
          step: 'predict',
          fault: 'task',
          message: "the submission's predict step exited with code 3",
          retryable: false,
          attempts: 1,
          log_tail: ['asked to exit with 3'],
        },
        usage: {
          worker: expect.any(String),
          host: hostname(),
          steps: { predict: expect.objectContaining({ wall_s: expect.any(Number) }) },
        },
      },
    ]);
    expect(deliveries('permanent')).toEqual([1]);
    expect(commands('permanent')).toContain('FIN');
    expect(commands('permanent')).not.toContain('REQ');
    const line = worker.lines.find((l) => l.task === permanent.uuid && isError(l));
    expect(line?.msg).toMatch(/exited with code 3/);
  });

  it('a storage outage longer than the client retries requeues with a delay, then succeeds', () => {
    const req = commandsFor(h.nsqd, id('transient')).filter((c) => c.name === 'REQ');
    expect(req).toHaveLength(1);
    expect(Number(req[0]?.params[1])).toBeGreaterThan(0);
    expect(deliveries('transient')).toEqual([1, 2]);
    const reports = reportsOf(h.orchestrator, transient.uuid);
    expect(reports.map((r) => r.body.status)).toEqual(['done']);
    expect(h.orchestrator.task(transient.uuid)?.status).toBe('done');
  });

  it('when attempts run out the task is reported failed with the last reason', () => {
    expect(deliveries('exhausted')).toEqual([1, 2]);
    expect(commands('exhausted').filter((c) => c === 'REQ')).toHaveLength(1);
    expect(reportsOf(h.orchestrator, exhausted.uuid).map((r) => r.body)).toEqual([
      expect.objectContaining({
        status: 'failed',
        error: expect.objectContaining({
          code: 'STORAGE_FAILED',
          step: 'stage',
          fault: 'worker',
          message: expect.stringMatching(/503.*\(gave up after 2 attempts\)$/),
          retryable: true,
          attempts: 2,
        }),
      }),
    ]);
    const line = worker.lines.find((l) => l.task === exhausted.uuid && isError(l));
    expect(line?.msg).toMatch(/503/);
    expect(line?.msg).toMatch(/after 2 attempts/);
  });

  it('an unparseable message is finished and logged, nothing reported', () => {
    expect(deliveries('unparseable')).toEqual([1]);
    expect(commands('unparseable')).toEqual(['FIN']);
    const line = worker.lines.find((l) => l.message === id('unparseable'));
    expect(line?.msg).toMatch(/invalid task message/);
    // Every orchestrator request names one of the tasks with a readable uuid.
    const known = [permanent, transient, exhausted, taken, takenRedelivered].map((t) => t.uuid);
    for (const r of h.orchestrator.requests) {
      expect(
        [...known, invalidUuid, learnOnTrainUuid].some((uuid) => r.path.endsWith(`/${uuid}`)),
      ).toBe(true);
    }
  });

  it('an invalid task with a readable uuid is reported failed and finished', () => {
    expect(reportsOf(h.orchestrator, invalidUuid).map((r) => r.body)).toEqual([
      {
        status: 'failed',
        error: {
          code: 'TASK_INVALID',
          fault: 'task',
          message: expect.stringMatching(/model/),
          retryable: false,
          attempts: 1,
        },
      },
    ]);
    expect(claimsOf(h.orchestrator, invalidUuid)).toEqual([]);
    expect(commands('invalid')).toEqual(['FIN']);
    const line = worker.lines.find((l) => l.task === invalidUuid && isError(l));
    expect(line?.msg).toMatch(/model/);
  });

  it('an invalid message of the other kind is finished and logged, never reported', () => {
    const commands = commandsFor(h.nsqd, id('predictOnTrain')).map((c) => c.name);
    expect(commands).toEqual(['FIN']);
    expect(reportsOf(h.orchestrator, predictOnTrainUuid)).toEqual([]);
    expect(claimsOf(h.orchestrator, predictOnTrainUuid)).toEqual([]);
    expect(h.orchestrator.task(predictOnTrainUuid)?.status).toBe('todo');
    const line = worker.lines.find((l) => l.task === predictOnTrainUuid && isError(l));
    expect(line?.msg).toMatch(
      /^invalid task message, finished \(not reported: its fields are those of a predict task, not of a learn task\)/,
    );
  });

  it('an invalid learn message on the learn topic is reported failed to learndone', () => {
    expect(commandsFor(h.nsqd, id('learnOnTrain')).map((c) => c.name)).toEqual(['FIN']);
    expect(
      reportsOf(h.orchestrator, learnOnTrainUuid).map((r) => [r.path, r.body, r.status]),
    ).toEqual([
      [
        `/learndone/${learnOnTrainUuid}`,
        {
          status: 'failed',
          error: expect.objectContaining({ code: 'TASK_INVALID', fault: 'task' }),
        },
        200,
      ],
    ]);
    expect(claimsOf(h.orchestrator, learnOnTrainUuid)).toEqual([]);
  });

  it('a task taken by another worker is finished without running on a first delivery', () => {
    expect(deliveries('taken')).toEqual([1]);
    expect(commands('taken')).toEqual(['FIN']);
    expect(claimsOf(h.orchestrator, taken.uuid).map((r) => r.status)).toEqual([400]);
    expect(storageHits(taken.data)).toEqual([]);
    expect(reportsOf(h.orchestrator, taken.uuid)).toEqual([]);
  });

  it('a redelivered task that is already taken proceeds and is done', () => {
    expect(deliveries('takenRedelivered')).toEqual([1, 2]);
    expect(claimsOf(h.orchestrator, takenRedelivered.uuid).map((r) => r.status)).toEqual([400]);
    expect(storageHits(takenRedelivered.data).length).toBeGreaterThan(0);
    expect(reportsOf(h.orchestrator, takenRedelivered.uuid).map((r) => r.body.status)).toEqual([
      'done',
    ]);
  });

  it('leaves no container or volume behind', async () => {
    expect(await h.fleet.leftovers(await worker.workerId())).toEqual({
      containers: [],
      volumes: [],
    });
  });
});
