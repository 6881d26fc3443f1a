import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { execEngine } from '../../src/engine/exec.js';
import { podmanRuntimeDir } from '../../src/engine/runtime-dir.js';

// A uid with no /run/user folder: no login session.
const NO_SESSION = 4_000_123;

describe('the runtime folder a rootless podman keeps its user namespace in', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-runtime-dir-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is $XDG_RUNTIME_DIR, else /run/user/UID, else $TMPDIR/podman-run-UID as podman picks it', () => {
    expect(podmanRuntimeDir({ XDG_RUNTIME_DIR: '/x', TMPDIR: '/t' }, NO_SESSION)).toBe('/x');
    expect(podmanRuntimeDir({ TMPDIR: '/t' }, NO_SESSION)).toBe(`/t/podman-run-${NO_SESSION}`);
    expect(podmanRuntimeDir({}, NO_SESSION)).toBe(`/tmp/podman-run-${NO_SESSION}`);
  });

  it("stays where it was when a build's call is given a TMPDIR of its own", async () => {
    const uid = process.getuid?.() ?? 0;
    // As root, the call runs as another user, as the build user's podman does.
    const asUser =
      uid === 0 ? { uid: 65534, gid: 65534, env: { PATH: '/usr/bin:/bin' } } : undefined;
    // `env` in podman's place prints what podman would have been given.
    const env = async (user: typeof asUser, extra?: Record<string, string>) => {
      const cli = { name: 'podman' as const, path: '/usr/bin/env', workDir: '/', user };
      const printed = await execEngine(cli, [], { timeoutMs: 10_000, env: extra });
      return Object.fromEntries(
        printed
          .trim()
          .split('\n')
          .map((l) => l.split(/=(.*)/s, 2)),
      );
    };
    const build = await env(asUser, { TMPDIR: dir });
    expect(build.TMPDIR).toBe(dir);
    expect(build.XDG_RUNTIME_DIR).toBe(
      podmanRuntimeDir(asUser?.env ?? process.env, asUser?.uid ?? uid),
    );
    expect(build.XDG_RUNTIME_DIR).not.toContain(dir);
    if (uid === 0) {
      // Rootful podman keeps no user namespace: nothing is added to its calls.
      expect((await env(undefined, { TMPDIR: dir })).XDG_RUNTIME_DIR).toBe(
        process.env.XDG_RUNTIME_DIR,
      );
    }
  });
});
