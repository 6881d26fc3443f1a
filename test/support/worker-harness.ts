import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import {
  channelOf,
  type DeliveryRecord,
  type Nsqd,
  type NsqdOptions,
  type NsqdStats,
  startNsqd,
} from './nsq/index.js';
import { type OrchestratorServer, startOrchestratorServer } from './orchestrator-server.js';
import { type StorageServer, startStorageServer } from './storage-server.js';
import { seedFixtures, type WorkerFixtures } from './worker-fixtures.js';
import { assertBuilt, WorkerFleet, workerArgs } from './worker-process.js';

export { until } from './until.js';

export const TOPIC = { learn: 'train', predict: 'prediction' } as const;
export const CHANNEL = 'compute';

/**
 * Everything a daemon test talks to, on 127.0.0.1 and free ports: an nsqd stand-in,
 * storage and orchestrator stand-ins with distinctive passwords, the test images'
 * build contexts in storage, and a fleet of worker processes.
 */
export interface Harness {
  nsqd: Nsqd;
  storage: StorageServer;
  orchestrator: OrchestratorServer;
  fixtures: WorkerFixtures;
  fleet: WorkerFleet;
  passwords: { storage: string; orchestrator: string };
  /** The environment that gives a worker the services' passwords. */
  env: Record<string, string>;
  /**
   * Common flags for a new worker with its own state folder (or `stateDir`), plus
   * `extra`; it finds nsqd through `nsq` (default: nsqd's TCP address).
   */
  args(extra?: string[], stateDir?: string, nsq?: string[]): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startHarness(nsqdOptions: NsqdOptions = {}): Promise<Harness> {
  const suffix = Math.random().toString(36).slice(2, 10);
  const passwords = { storage: `st0rage-${suffix}-Secret`, orchestrator: `0rch-${suffix}-Secret` };
  const [nsqd, storage, orchestrator] = await Promise.all([
    startNsqd({ msgTimeoutMs: 3000, ...nsqdOptions }),
    startStorageServer({ password: passwords.storage }),
    startOrchestratorServer({ password: passwords.orchestrator }),
  ]);
  const fixtures = await seedFixtures(storage);
  const fleet = new WorkerFleet();
  return {
    nsqd,
    storage,
    orchestrator,
    fixtures,
    fleet,
    passwords,
    env: {
      COMPUTE_WORKER_STORAGE_PASSWORD: passwords.storage,
      COMPUTE_WORKER_ORCHESTRATOR_PASSWORD: passwords.orchestrator,
    },
    async args(extra = [], stateDir, nsq = ['--nsqd-tcp-addresses', nsqd.tcpAddress]) {
      const dir = stateDir ?? (await fleet.newStateDir());
      return [...nsq, ...workerArgs({ storage, orchestrator }, dir), ...extra];
    },
    async stop() {
      // CW_TEST_DEBUG=1 shows what each worker logged and what nsqd received.
      if (process.env.CW_TEST_DEBUG) {
        for (const w of fleet.workers) console.log(`worker ${w.pid}:\n${w.output}`);
        const commands = nsqd.received.filter((c) => c.name !== 'NOP');
        console.log(
          commands
            .map((c) => `${c.at} ${c.connectionId} ${c.name} ${c.params.join(' ')}`)
            .join('\n'),
        );
      }
      await fleet.cleanup();
      await Promise.all([nsqd.stop(), storage.close(), orchestrator.close()]);
    },
  };
}

/** Every delivery of message `id` on topic's channel `compute`. */
export function deliveriesOf(stats: NsqdStats, topic: string, id: string): DeliveryRecord[] {
  return (channelOf(stats, topic, CHANNEL)?.deliveries ?? []).filter((d) => d.id === id);
}

/** The orchestrator reports about one task (`/learndone` or `/preddone`) with their bodies. */
export function reportsOf(orchestrator: OrchestratorServer, uuid: string) {
  return orchestrator.requests
    .filter((r) => /^\/(learndone|preddone)\//.test(r.path) && r.path.endsWith(`/${uuid}`))
    .map((r) => ({ path: r.path, status: r.status, body: r.body as Record<string, unknown> }));
}

export function claimsOf(orchestrator: OrchestratorServer, uuid: string) {
  return orchestrator.requests.filter(
    (r) => r.path.startsWith('/worker/') && r.path.endsWith(`/${uuid}`),
  );
}

/** nsqd commands received naming message `id` (FIN, REQ, TOUCH). */
export function commandsFor(nsqd: Nsqd, id: string) {
  return nsqd.received.filter((c) => c.params[0] === id);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * What an operator relies on in every worker's output: JSON lines only, each line about
 * a message naming its task (unless the message had no readable uuid), and no password.
 */
export function logProblems(h: Harness, allowedWithoutTask: string[] = []): string[] {
  const problems: string[] = [];
  for (const w of h.fleet.workers) {
    for (const line of w.other) problems.push(`not JSON: ${line}`);
    for (const line of w.lines) {
      if (line.message !== undefined && line.task === undefined) {
        if (!allowedWithoutTask.some((text) => line.msg.includes(text)))
          problems.push(`no task uuid: ${JSON.stringify(line)}`);
      }
    }
    for (const secret of Object.values(h.passwords)) {
      if (w.output.includes(secret))
        problems.push(`password ${secret} in the output of worker ${w.pid}`);
    }
  }
  return problems;
}

/**
 * Starts a harness before the file's tests (or each test) and stops it after, failing
 * when a worker's output breaks what an operator relies on (see logProblems).
 */
export function useHarness(
  nsqdOptions: NsqdOptions,
  assign: (h: Harness) => void,
  options: { each?: boolean; allowedWithoutTask?: string[]; checkLogs?: boolean } = {},
): void {
  let h: Harness | undefined;
  (options.each ? beforeEach : beforeAll)(async () => {
    assertBuilt();
    h = await startHarness(nsqdOptions);
    assign(h);
  });
  (options.each ? afterEach : afterAll)(async () => {
    const problems =
      h && options.checkLogs !== false ? logProblems(h, options.allowedWithoutTask) : [];
    await h?.stop();
    h = undefined;
    expect(problems).toEqual([]);
  });
}
