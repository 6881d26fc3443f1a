import { describe, expect, it } from 'vitest';
import { predictTask } from '../support/worker-fixtures.js';
import {
  claimsOf,
  commandsFor,
  type Harness,
  reportsOf,
  TOPIC,
  useHarness,
} from '../support/worker-harness.js';
import { hasPodman, requireEngines, WARN } from '../support/worker-process.js';

// A worker on a host short of disk space takes no task: each message goes back to NSQ
// with a delay, unclaimed, for a worker with room; the reason is logged once.

describe.skipIf(!hasPodman && !requireEngines)('a host short of disk space', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });

  it('hands every message back unrun, and says why once', async () => {
    const tasks = [1, 2, 3].map(() => predictTask(h.storage, h.orchestrator, h.fixtures));
    const ids = tasks.map((task) => h.nsqd.publish(TOPIC.predict, task.body)[0] as string);
    const worker = await h.fleet.start(await h.args(['--min-free-disk', '100000g']), {
      env: h.env,
    });

    await h.nsqd.waitFor(
      () => ids.every((id) => commandsFor(h.nsqd, id).some((c) => c.name === 'REQ')),
      60_000,
      'every message handed back',
    );
    for (const id of ids) {
      expect(commandsFor(h.nsqd, id).map((c) => [c.name, c.params[1]])).toEqual([['REQ', '30000']]);
    }
    for (const task of tasks) {
      expect(claimsOf(h.orchestrator, task.uuid)).toEqual([]);
      expect(reportsOf(h.orchestrator, task.uuid)).toEqual([]);
      expect(h.storage.requests.filter((r) => r.path.includes(task.data))).toEqual([]);
    }
    const why = worker.find('not taking tasks');
    expect(why).toHaveLength(1);
    expect(why[0]?.level).toBe(WARN);
    expect(why[0]?.msg).toMatch(
      /^not taking tasks: the engine's storage \/\S+ has .* free, less than --min-free-disk 100000g; messages go back to NSQ until there is room$/,
    );
    expect(await h.fleet.leftovers(await worker.workerId())).toEqual({
      containers: [],
      volumes: [],
    });
  }, 120_000);
});
