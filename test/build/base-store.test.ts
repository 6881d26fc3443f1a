import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { baseStoreFor, ENGINE_TMP_BASE } from '../../src/build/store.js';
import { createEngine } from '../../src/container-engine.js';
import { storeArgs } from '../../src/engine/args.js';
import { execEngineRaw } from '../../src/engine/exec.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];

describe.skipIf(unavailableUnlessRequired(variant))('the base store of a new host', () => {
  const dir = mkdtempSync(join(ENGINE_TMP_BASE, 'cw-base-store-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is made before any base is copied in: a FROM scratch build can name it at once', async () => {
    const engine = await createEngine(variant.options);
    // A host whose store has never held a base: podman pointed at a new store.
    const host = join(dir, 'host');
    // overlay, as on a real host: it refuses an image store that is not there (vfs does not).
    const hostArgs = ['--root', join(host, 'root'), '--runroot', join(host, 'run')];
    hostArgs.push('--storage-driver', 'overlay');
    const ctx = {
      cli: { name: 'podman' as const, path: '/usr/bin/podman', globalArgs: hostArgs },
      info: engine.info,
      options: { ...variant.options, callTimeoutMs: 60_000 },
    };
    const bases = await baseStoreFor(ctx);
    expect(bases.spec.root).toBe(join(host, 'compute-worker-bases'));
    expect(statSync(bases.spec.root).isDirectory()).toBe(true);
    // A build's store sees the base store as an image store: podman refuses one not there.
    const build = storeArgs({
      root: join(dir, 'build', 'root'),
      runRoot: join(dir, 'build', 'run'),
      driver: bases.spec.driver,
      imageStores: [bases.spec.root],
    });
    const cli = { name: 'podman' as const, path: '/usr/bin/podman' };
    const listed = await execEngineRaw(cli, [...build, 'images', '-q'], { timeoutMs: 60_000 });
    expect(listed.outputTail).not.toMatch(/imageStore/);
    expect(listed.exitCode).toBe(0);
  });
});
