import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it, vi } from 'vitest';
import { predictTask } from '../support/worker-fixtures.js';
import { type Harness, reportsOf, TOPIC, useHarness } from '../support/worker-harness.js';
import { hasPodman, requireEngines } from '../support/worker-process.js';

// A daemon killed while it stages a data set into the host's data cache: the set is left
// unfinished (its index file and its volume), and the next start of a worker on that
// cache folder removes it before it takes a task.

const MIB = 1024 ** 2;

describe.skipIf(!hasPodman && !requireEngines)('data cache across a worker restart', () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 3000 }, (started) => {
    h = started;
  });

  it('the restart removes the set a killed staging left unfinished, then does the task', async () => {
    const cache = await mkdtemp(join(tmpdir(), 'cw-worker-data-cache-'));
    const entries = async () => {
      const names = await readdir(join(cache, 'entries')).catch(() => [] as string[]);
      return Promise.all(
        names.map(async (n) => JSON.parse(await readFile(join(cache, 'entries', n), 'utf8'))),
      );
    };
    const exists = async (volume: string) =>
      (await execa('podman', ['volume', 'exists', volume], { reject: false })).exitCode === 0;
    try {
      const task = predictTask(h.storage, h.orchestrator, h.fixtures);
      // 16 MiB at 64 KiB per 5 ms: more than a second of staging to be killed in.
      h.storage.seed('data', task.data, { blob: Buffer.alloc(16 * MIB, '\n') });
      h.storage.pace(64 * 1024, 5);
      const args = await h.args(['--data-cache-size', '1g', '--data-cache-dir', cache]);
      const first = await h.fleet.start(args, { env: h.env });
      await first.waitForLine((l) => l.msg === 'connected to nsqd', 60_000, 'connected');
      h.nsqd.publish(TOPIC.predict, task.body);
      let volume = '';
      await vi.waitFor(
        async () => {
          const [entry] = await entries();
          volume = entry?.complete === false ? entry.volume : '';
          expect(volume !== '' && (await exists(volume))).toBe(true);
        },
        { timeout: 120_000, interval: 100 },
      );
      first.kill('SIGKILL');
      await first.exited;
      h.storage.seed('data', task.data, { blob: '\n' });

      const again = await h.fleet.start(args, { env: h.env });
      const swept = await again.waitForLine(
        (l) => l.msg === 'data cache: removed unfinished or unused sets',
        60_000,
        'the sweep of the data cache',
      );
      expect(swept.volumes).toContain(volume);
      expect(await exists(volume)).toBe(false);
      await again.waitForLine(
        (l) => l.task === task.uuid && l.msg === 'task done',
        180_000,
        'the redelivered task to be done',
      );
      expect(reportsOf(h.orchestrator, task.uuid).map((r) => r.body.status)).toEqual(['done']);
      const left = await entries();
      expect(left.map((e) => [e.uuids, e.complete])).toEqual([[[task.data], true]]);
    } finally {
      for (const entry of await entries()) {
        await execa('podman', ['volume', 'rm', '--force', entry.volume]);
      }
      await rm(cache, { recursive: true, force: true });
    }
  });
});
