import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  symlink,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { engineFor } from '../../src/container-engine.js';
import { measureTree } from '../../src/engine/volume-usage.js';

// The walk behind --disk-limit, on real files: what a volume's folder holds on disk.

describe('measureTree', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-usage-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const MiB = 1024 ** 2;
  const walk = (root: string, extra = {}) => measureTree(root, { maxEntries: 1000, ...extra });

  it('counts the allocated bytes of nested files', async () => {
    await mkdir(join(dir, 'a', 'b'), { recursive: true });
    await writeFile(join(dir, 'a', 'b', 'weights'), randomBytes(3 * MiB));
    await writeFile(join(dir, 'top'), randomBytes(MiB));
    const usage = await walk(dir);
    expect(usage.bytes).toBeGreaterThanOrEqual(4 * MiB);
    expect(usage.bytes).toBeLessThan(5 * MiB);
    expect(usage).toMatchObject({ entries: 5, unreadable: 0, truncated: false });
  });

  it('counts a sparse file by its blocks, not its apparent size', async () => {
    await writeFile(join(dir, 'sparse'), '');
    await truncate(join(dir, 'sparse'), 1024 ** 3);
    expect((await walk(dir)).bytes).toBeLessThan(MiB);
  });

  it('does not follow a link out of the folder', async () => {
    const outside = await mkdtemp(join(tmpdir(), 'cw-usage-outside-'));
    try {
      await writeFile(join(outside, 'big'), randomBytes(4 * MiB));
      await symlink(join(outside, 'big'), join(dir, 'link-to-file'));
      await symlink(outside, join(dir, 'link-to-folder'));
      const usage = await walk(dir);
      expect(usage.bytes).toBeLessThan(MiB);
      expect(usage.entries).toBe(3);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('stops at its bounds: many files, or enough bytes to know', async () => {
    for (let i = 0; i < 50; i++) await writeFile(join(dir, `f${i}`), 'x');
    expect(await walk(dir, { maxEntries: 10 })).toMatchObject({ truncated: true, entries: 10 });
    await writeFile(join(dir, 'big'), randomBytes(2 * MiB));
    const early = await walk(dir, { stopAtBytes: 1024 });
    expect(early.bytes).toBeGreaterThan(1024);
    expect(early.truncated).toBe(false);
  });

  it('throws when the folder is not there (a remote engine)', async () => {
    await expect(walk(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('the host folder of a volume', () => {
  it('is found where the engine keeps volumes without asking it, else the engine is asked', async () => {
    const root = await mkdtemp(join(tmpdir(), 'cw-graphroot-'));
    try {
      const log = join(root, 'asked');
      const cli = join(root, 'podman');
      await writeFile(cli, `#!/bin/sh\necho "$*" >>'${log}'\necho /from/the/engine\n`);
      await chmod(cli, 0o755);
      const info = {
        name: 'podman' as const,
        path: cli,
        version: '4.3.1',
        clientVersion: '4.3.1',
        rootless: false,
        ociRuntime: 'runc',
        cgroupVersion: 2 as const,
        storageDriver: 'overlay',
        gpuDevices: 'cdi' as const,
        cgroupHybrid: false,
        graphRoot: root,
      };
      const engine = engineFor(info, { buildTimeoutMs: 10_000, callTimeoutMs: 10_000 });
      const here = 'cw-vol-0123456789abcdef';
      await mkdir(join(root, 'volumes', here, '_data'), { recursive: true });
      expect(await engine.volumeMountpoint(here)).toBe(join(root, 'volumes', here, '_data'));
      expect(existsSync(log)).toBe(false);
      expect(await engine.volumeMountpoint('cw-vol-fedcba9876543210')).toBe('/from/the/engine');
      expect(await readFile(log, 'utf8')).toContain('cw-vol-fedcba9876543210');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
