import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { execEngineRaw } from '../../src/engine/exec.js';
import { LABEL_BUILT_BY } from '../../src/engine/labels.js';
import type { Engine } from '../../src/engine/types.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(variant);

/**
 * Several workers share one image store. podman lists and prunes images by reading every
 * image, and fails when another process removes one meanwhile: a worker's image listing
 * and pruning must not fail because a sibling is busy.
 */
describe.skipIf(why)('image listing while another process removes images (rootful podman)', () => {
  const run = randomBytes(4).toString('hex');
  const label = { [LABEL_BUILT_BY]: `listing-test-${run}` };
  const churnLabel = `cw-listing-churn=${run}`;
  let engine: Engine;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-listing-'));
    engine = await createEngine(variant.options);
  });

  afterAll(async () => {
    if (!engine) return;
    const left = await execa('podman', ['images', '-q', '--filter', `label=${churnLabel}`], {
      reject: false,
    });
    for (const id of left.stdout.split(/\s+/).filter(Boolean)) {
      await execEngineRaw(engine.info, ['rmi', '--force', id], { timeoutMs: 60_000 });
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('lists and prunes its own images while a sibling builds and removes others', async () => {
    // A sibling: builds and removes small unnamed images as fast as it can, until told to
    // stop, counting the images it removed. Its own calls race the store too (podman's
    // build cache check says "layer not known" when a test beside it removes images): such
    // a round is skipped, as a sibling worker would retry it.
    const stop = join(dir, 'stop');
    const churn = execa(
      'sh',
      [
        '-c',
        `n=0; i=0
         while [ ! -e '${stop}' ]; do
           i=$((i+1))
           id=$(printf 'FROM scratch\\nLABEL n=%s\\n' "$i" |
             podman build -q --label ${churnLabel} -f - '${dir}') || continue
           podman rmi --force "$id" >/dev/null && n=$((n+1))
         done
         echo "$n"`,
      ],
      { reject: false },
    );
    let exited = false;
    void churn.finally(() => {
      exited = true;
    });
    const failures: string[] = [];
    // Ten calls, each long enough for a removal to fall within it now and then.
    for (let i = 0; i < 5 && !exited; i++) {
      for (const call of [() => engine.listImages(label), () => engine.pruneImages(label)]) {
        await call().catch((error: Error & { detail?: string }) =>
          failures.push(`${error.message}: ${error.detail ?? ''}`),
        );
      }
    }
    await writeFile(stop, '');
    const done = await churn;
    expect(done.exitCode, done.stderr).toBe(0);
    expect(Number(done.stdout)).toBeGreaterThanOrEqual(3);
    expect(failures).toEqual([]);
  }, 180_000);
});
