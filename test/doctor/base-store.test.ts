import { describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { baseStoreCheck } from '../../src/doctor/base-store.js';
import type { BaseStoreSummary, Engine } from '../../src/engine/types.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];

/** An engine whose base store is as given: the check's words alone. */
const withStore = (summary: BaseStoreSummary | undefined | Error) =>
  ({
    baseStore: async () => {
      if (summary instanceof Error) throw summary;
      return summary;
    },
  }) as unknown as Engine;

describe("doctor's base-store check", () => {
  const root = '/home/cwbuild/.local/share/containers/compute-worker-bases';

  it('says what the base store holds, and which copies the host has dropped', async () => {
    const some = { root, exists: true, images: 2, missing: 0, bytes: 3 * 1024 ** 3 };
    expect(await baseStoreCheck(withStore(some))).toEqual({
      name: 'base-store',
      status: 'pass',
      message: `${root}: 2 images, 3.0 GiB on disk`,
    });
    const dropped = await baseStoreCheck(withStore({ ...some, missing: 1 }));
    expect(dropped.message).toContain('; 1 of them no longer on the host, removed by');
    const none = await baseStoreCheck(withStore({ ...some, exists: false }));
    expect(none.message).toBe(`${root}: none yet (made by the first untrusted build)`);
    expect((await baseStoreCheck(withStore(undefined))).status).toBe('skip');
    const broken = await baseStoreCheck(withStore(new Error('podman images failed')));
    expect(broken).toMatchObject({ status: 'warn', message: expect.stringContaining('failed') });
  });

  it.skipIf(unavailableUnlessRequired(variant))(
    "finds the store podman's untrusted builds use, without making it",
    async () => {
      const engine = await createEngine(variant.options);
      const summary = await engine.baseStore();
      expect(summary?.root).toMatch(/\/compute-worker-bases$/);
      if (summary?.exists) expect(summary.images).toBeGreaterThanOrEqual(summary.missing);
      else expect(summary?.bytes).toBe(0);
    },
  );
});
