import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedPort } from '../support/http-stand-in.js';
import { type Nsqlookupd, startNsqlookupd } from '../support/nsq/index.js';
import { type Harness, TOPIC, until, useHarness } from '../support/worker-harness.js';
import { BIN, hasPodman, requireEngines } from '../support/worker-process.js';

// The README's common.env recipe: every flag from COMPUTE_WORKER_<FLAG>, the repeatable
// ones as comma lists. One flag of each kind, through `run` and through `doctor`.

interface DoctorJson {
  checks: { name: string; status: string; message: string }[];
}

const subscribed = (h: Harness, from: number) =>
  h.nsqd.received
    .slice(from)
    .filter((c) => c.name === 'SUB')
    .map((c) => c.params[0]);

describe.skipIf(!hasPodman && !requireEngines)('flags from the environment', () => {
  let h: Harness;
  useHarness({}, (started) => {
    h = started;
  });
  let lookupd: Nsqlookupd;
  let closed: string;
  beforeAll(async () => {
    lookupd = await startNsqlookupd({ nsqds: [h.nsqd] });
    h.nsqd.getTopic(TOPIC.learn);
    h.nsqd.getTopic(TOPIC.predict);
    closed = `127.0.0.1:${await closedPort()}`;
  });
  afterAll(() => lookupd.stop());

  it('run takes a list of nsqlookupd, an integer, a duration, a size, a number and an option', async () => {
    const from = h.nsqd.received.length;
    const worker = await h.fleet.start(await h.args([], undefined, []), {
      env: {
        ...h.env,
        COMPUTE_WORKER_NSQLOOKUPD_URLS: `${closed}, ${lookupd.address}`,
        COMPUTE_WORKER_LEARN_PARALLELISM: '2',
        COMPUTE_WORKER_SHUTDOWN_GRACE: '45s',
        // The harness passes --memory 256m: the command line wins over the environment.
        COMPUTE_WORKER_MEMORY: '300m',
        COMPUTE_WORKER_PIDS_LIMIT: '300',
        COMPUTE_WORKER_CPUS: '0.5',
      },
    });
    const started = await worker.waitForLine(
      (l) => l.msg === 'worker started',
      120_000,
      'the worker started',
    );
    expect(started).toMatchObject({
      learnParallelism: 2,
      nsqlookupd: [closed, lookupd.address],
      nsqd: [],
      shutdownGrace: '45s',
      limits: { memory: '256m', cpus: 0.5, pidsLimit: 300 },
    });
    for (const topic of [TOPIC.learn, TOPIC.predict])
      await worker.waitForLine(
        (l) => l.msg === 'connected to nsqd' && l.topic === topic,
        60_000,
        `a connection for ${topic} found through nsqlookupd`,
      );
    expect(subscribed(h, from).sort()).toEqual([TOPIC.predict, TOPIC.learn].sort());
    worker.kill('SIGKILL');
    await worker.exited;
  });

  it('run takes a list of nsqd and an option, each failure one line naming its address', async () => {
    const from = h.nsqd.received.length;
    const worker = await h.fleet.start(await h.args([], undefined, []), {
      env: {
        ...h.env,
        COMPUTE_WORKER_NSQD_TCP_ADDRESSES: `${h.nsqd.tcpAddress},${closed}`,
        COMPUTE_WORKER_LOG_LEVEL: 'warn',
      },
    });
    await until(() => subscribed(h, from).length >= 2, 120_000, 'both topics subscribed');
    expect(subscribed(h, from).sort()).toEqual([TOPIC.predict, TOPIC.learn].sort());
    // The closed one is tried again every second (--lookupd-poll-interval 1s): one line
    // per attempt and topic, without a stack, and no "connection closed" for it.
    const about = () => worker.lines.filter((l) => l.nsqd === closed);
    const before = about().length;
    await new Promise((r) => setTimeout(r, 4_000));
    const failures = about();
    expect(failures.length - before).toBeGreaterThanOrEqual(2);
    expect(failures.length - before).toBeLessThanOrEqual(2 * 5);
    for (const line of failures) {
      expect(line.msg).toBe(`nsqd at ${closed}: connect ECONNREFUSED ${closed}`);
      expect(line.err).toBeUndefined();
    }
    // --log-level warn: no info line (such as "worker started").
    expect(worker.lines.filter((l) => l.level === 'info' || l.level === 'debug')).toEqual([]);
    expect(worker.output).not.toMatch(/\n\s+at /);
  });

  it('a bad value in a variable is refused naming its flag, as on the command line', async () => {
    for (const command of ['run', 'doctor']) {
      const result = await execa('node', [BIN, command], {
        reject: false,
        env: { NODE_NO_WARNINGS: '1', COMPUTE_WORKER_DISK_BOUND: 'sometimes' },
      });
      expect(result.exitCode, command).toBe(2);
      expect(result.stderr).toContain('--disk-bound=sometimes');
      const list = await execa('node', [BIN, command], {
        reject: false,
        env: { NODE_NO_WARNINGS: '1', COMPUTE_WORKER_NSQD_TCP_ADDRESSES: '127.0.0.1:4150,nsqd' },
      });
      expect(list.exitCode, command).toBe(2);
      expect(list.stderr).toContain('--nsqd-tcp-addresses');
      expect(list.stderr).toContain('"nsqd": the port is missing');
    }
  });

  it('doctor takes the lists, a duration, a size, an integer and a string', async () => {
    const state = await h.fleet.newStateDir();
    const result = await execa(
      'node',
      [BIN, 'doctor', '--json', '--engine-path', '/nonexistent/podman'],
      {
        reject: false,
        env: {
          NODE_NO_WARNINGS: '1',
          COMPUTE_WORKER_NSQLOOKUPD_URLS: `${lookupd.address},${closed}`,
          COMPUTE_WORKER_NSQD_TCP_ADDRESSES: h.nsqd.tcpAddress,
          COMPUTE_WORKER_LEARN_TIMEOUT: '3h',
          COMPUTE_WORKER_DISK_LIMIT: '1g',
          COMPUTE_WORKER_LEARN_GPUS: '1',
          COMPUTE_WORKER_STATE_DIR: state,
        },
      },
    );
    const checks = (JSON.parse(result.stdout) as DoctorJson).checks;
    const messages = (name: string) => checks.filter((c) => c.name === name).map((c) => c.message);
    expect(messages('nsqlookupd')).toEqual([
      `nsqlookupd at ${lookupd.address} answers`,
      expect.stringContaining(`nsqlookupd at ${closed} does not answer`),
    ]);
    expect(messages('nsqd').join('\n')).toContain(`at ${h.nsqd.tcpAddress}`);
    expect(messages('nsqd-max-msg-timeout').join('\n')).toContain('learn tasks may run 3h0m0s');
    expect(checks.filter((c) => c.message.includes('(--min-free-disk 2g)')).length).toBe(1);
    expect(messages('gpu-driver').join('\n')).toContain('GPUs were asked for');
    expect(messages('storage')).toEqual([`local storage ${state}/storage answers`]);
  });
});
