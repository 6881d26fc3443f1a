import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { BUILD_MARK_ARG } from '../../src/engine/args.js';
import { processesWith } from '../support/build-traces.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(variant);

/**
 * Where the worker made no build cgroup (it does not run as root), a dead worker's builds
 * are found by their command line: `podman build ... --build-arg <mark>=<worker id>.<n>`.
 * Stand-ins for such builds: shells with that command line and a child shell that loops.
 */
describe.skipIf(why)('orphan builds found by their mark (rootful podman)', () => {
  it("kills a dead worker's marked build and its children, and nothing else", async () => {
    const owner = randomUUID();
    const other = randomUUID();
    const marker = `cwmark${owner.slice(0, 8)}`;
    // No pipes: a child holding one would keep the stand-in's end waiting.
    const standIn = (mark: string, ...args: string[]) =>
      execa(
        'sh',
        [
          '-c',
          `sh -c "while :; do sleep 1; done # ${marker}" & wait # ${marker}`,
          'sh',
          ...args,
          mark,
        ],
        { stdio: 'ignore', reject: false },
      );
    const orphan = standIn(`${BUILD_MARK_ARG}=${owner}.0123`, 'build', '--build-arg');
    const sibling = standIn(`${BUILD_MARK_ARG}=${other}.0123`, 'build', '--build-arg');
    // The mark in a command line that is no build: an operator's grep, say.
    const grep = standIn(`${BUILD_MARK_ARG}=${owner}.0123`, 'grep', '-e');
    try {
      // Each stand-in: a shell and its child shell, both marked.
      while ((await processesWith(marker)).length < 6) await sleep(50);

      const engine = await createEngine(variant.options);
      const left = await engine.removeOrphanBuilds(owner);
      expect(left.builds).toEqual([`${owner}.0123`]);
      expect((await orphan).signal).toBe('SIGKILL');
      expect(await processesWith(marker)).toHaveLength(4);
      expect(sibling.exitCode).toBeNull();
      expect(grep.exitCode).toBeNull();
    } finally {
      for (const pid of await processesWith(marker)) process.kill(pid, 'SIGKILL');
      await Promise.all([orphan, sibling, grep]);
    }
  });
});
