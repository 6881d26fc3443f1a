import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BASE_PRUNE_INTERVAL_MS, pruneBases } from '../../src/build/base-prune.js';
import { baseStoreFor, ENGINE_TMP_BASE, syncBases } from '../../src/build/store.js';
import { createEngine } from '../../src/container-engine.js';
import { allImageIdsArgs } from '../../src/engine/args.js';
import { execEngine, execEngineRaw } from '../../src/engine/exec.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];
const HOUR = 60 * 60_000;

describe.skipIf(unavailableUnlessRequired(variant))(
  'the base store after the host drops a base',
  () => {
    const dir = mkdtempSync(join(ENGINE_TMP_BASE, 'cw-bp-'));
    afterAll(() => {
      // podman's overlay keeps each store's overlay folder mounted on itself.
      for (const store of ['root', 'compute-worker-bases']) {
        try {
          execFileSync('umount', [join(dir, 'host', store, 'overlay')], { stdio: 'ignore' });
        } catch {
          // not mounted
        }
      }
      rmSync(dir, { recursive: true, force: true });
    });

    it('gives the copy up once the host has not had it for the grace, and keeps what the host has', async () => {
      const engine = await createEngine(variant.options);
      // A host of the test's own: podman pointed at a new store.
      const host = join(dir, 'host');
      // (Root and run root in folders of their own: the base store goes beside each, and
      // podman takes a run root of 50 characters at most.)
      const hostArgs = ['--root', join(host, 'root'), '--runroot', join(dir, 'r', 'run')];
      hostArgs.push('--storage-driver', 'overlay');
      const ctx = {
        cli: { name: 'podman' as const, path: engine.info.path, globalArgs: hostArgs },
        info: engine.info,
        options: { ...variant.options, callTimeoutMs: 60_000 },
      };
      const call = { timeoutMs: 60_000 };
      // Two bases on the host, of different content.
      for (const name of ['kept', 'dropped']) {
        const rootfs = join(dir, `${name}-rootfs`);
        mkdirSync(join(rootfs, 'bin'), { recursive: true });
        copyFileSync('/bin/busybox', join(rootfs, 'bin', 'busybox'));
        symlinkSync('busybox', join(rootfs, 'bin', 'sh'));
        execFileSync('sh', ['-c', `echo ${name} > ${join(rootfs, 'name')}`]);
        execFileSync('tar', ['-C', rootfs, '-cf', join(dir, `${name}.tar`), '.']);
        await execEngine(
          ctx.cli,
          ['import', join(dir, `${name}.tar`), `localhost/${name}:1`],
          call,
        );
      }
      const bases = await baseStoreFor(ctx);
      await syncBases(ctx, bases, ['localhost/kept:1', 'localhost/dropped:1']);
      const held = async () =>
        (await execEngine(bases.owner.cli, allImageIdsArgs(), call)).trim().split('\n');
      const copies = await held();
      expect(copies).toHaveLength(2);
      const idOf = async (image: string) =>
        (
          await execEngine(ctx.cli, ['image', 'inspect', '--format', '{{.Id}}', image], call)
        ).trim();
      const dropped = await idOf('localhost/dropped:1');
      await execEngineRaw(ctx.cli, ['rmi', 'localhost/dropped:1'], call);

      // First seen missing: kept for the grace (a sibling's build may be reading it).
      const t0 = Date.now() + BASE_PRUNE_INTERVAL_MS;
      expect(await pruneBases(ctx, bases, { now: t0, graceMs: HOUR })).toEqual([]);
      expect(await held()).toHaveLength(2);
      // Within the interval nothing is even listed.
      expect(await pruneBases(ctx, bases, { now: t0 + 1000, graceMs: 0 })).toEqual([]);
      expect(await held()).toHaveLength(2);
      // Past the grace and the interval: the host's dropped base goes, its other base stays.
      const later = t0 + HOUR;
      const removed = await pruneBases(ctx, bases, { now: later, graceMs: HOUR });
      expect(removed.map((id) => id.replace(/^sha256:/, ''))).toEqual([dropped]);
      const left = await held();
      expect(left).toHaveLength(1);
      expect(left[0]?.replace(/^sha256:/, '')).toBe(await idOf('localhost/kept:1'));
    });
  },
);
