import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { measureTree } from '../../src/engine/volume-usage.js';
import { requireEngines, VARIANTS } from '../support/engine-variants.js';
import { assertBuilt } from '../support/worker-process.js';

// Rootless podman's worker runs as the user that owns the storage; a container's files
// belong to that user's subordinate ids, and a folder the container made private (0700)
// cannot be read by the worker. Its bytes must still count against --disk-limit.

const variant = VARIANTS['podman-rootless'];
const why = variant.unavailable();
const wrapper = variant.options.enginePath as string;
const dist = fileURLToPath(new URL('../../dist/src/container-engine.js', import.meta.url));
const USER = 'cwrootless';

describe.skipIf(why !== undefined && !requireEngines)('disk usage under rootless podman', () => {
  it("counts a folder the worker's user cannot read", { timeout: 180_000 }, async (ctx) => {
    assertBuilt();
    // The worker's code runs as that user: a checkout it cannot read (under /root) cannot.
    const readable = await execa('runuser', ['-u', USER, '--', 'test', '-r', dist], {
      reject: false,
    });
    if (readable.exitCode !== 0) ctx.skip(`${USER} cannot read ${dist}`);
    const volume = `cw-vol-usage-${randomBytes(6).toString('hex')}`;
    const work = await mkdtemp(join(tmpdir(), 'cw-usage-rootless-'));
    try {
      await execa(wrapper, ['volume', 'create', volume]);
      const mountpoint = (
        await execa(wrapper, ['volume', 'inspect', '--format', '{{.Mountpoint}}', volume])
      ).stdout.trim();
      // What a container running as 1000:1000 leaves: owned by a subordinate id, mode 0700.
      const subuid = (await readFile('/etc/subuid', 'utf8')).match(
        new RegExp(`^${USER}:(\\d+):`, 'm'),
      );
      const owner = Number(subuid?.[1]) + 999;
      const secret = join(mountpoint, 'private');
      await mkdir(secret);
      await writeFile(join(secret, 'blob'), randomBytes(3 * 1024 ** 2));
      await chown(join(secret, 'blob'), owner, owner);
      await chown(secret, owner, owner);
      await chmod(secret, 0o700);

      const script = join(work, 'measure.mjs');
      await writeFile(
        script,
        `const { createEngine } = await import(${JSON.stringify(dist)});
const engine = await createEngine({ engine: 'podman', ociRuntime: 'runc', buildTimeoutMs: 60000, callTimeoutMs: 60000 });
const mountpoint = await engine.volumeMountpoint(${JSON.stringify(volume)});
console.log(JSON.stringify(await engine.measureVolume(mountpoint, { maxEntries: 1000 })));
`,
      );
      await chmod(work, 0o755);
      await chmod(script, 0o644);
      const uid = (await execa('id', ['-u', USER])).stdout.trim();
      const asUser = await execa(
        'runuser',
        [
          '-u',
          USER,
          '--',
          'env',
          '-i',
          'PATH=/usr/local/bin:/usr/bin:/bin',
          `HOME=/home/${USER}`,
          `XDG_RUNTIME_DIR=/run/user/${uid}`,
          process.execPath,
          script,
        ],
        { cwd: '/' },
      );
      const usage = JSON.parse(asUser.stdout) as { bytes: number; unreadable: number };
      expect(usage.bytes).toBeGreaterThanOrEqual(3 * 1024 ** 2);
      expect(usage.unreadable).toBe(0);
      // As root the walk reads it directly: the same size.
      const direct = await measureTree(mountpoint, { maxEntries: 1000 });
      expect(Math.abs(direct.bytes - usage.bytes)).toBeLessThanOrEqual(8192);
    } finally {
      await execa(wrapper, ['volume', 'rm', '--force', volume], { reject: false });
      await rm(work, { recursive: true, force: true });
    }
  });
});
