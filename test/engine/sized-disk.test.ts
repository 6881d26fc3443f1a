import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { diskBoundCheck } from '../../src/doctor/disk-bound.js';
import {
  bindVolume,
  createSizedDisk,
  settleBaseline,
  sizedDiskUsage,
} from '../../src/engine/sized-disk.js';
import { diskLayout, MAX_INODES } from '../../src/engine/sized-disk-args.js';
import {
  attachedLoops,
  parseMountInfo,
  releaseSizedDisks,
} from '../../src/engine/sized-disk-release.js';
import type { EngineInfo } from '../../src/engine/types.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';
import { until } from '../support/until.js';

const MIB = 1024 ** 2;

describe('diskLayout', () => {
  it('spans the limit plus inode tables and ext4 reserve, a few per cent at 1 GiB', () => {
    const { fileBytes, inodes } = diskLayout(1024 * MIB);
    expect(inodes).toBe(65_536);
    expect(fileBytes).toBeGreaterThan(1024 * MIB);
    expect(fileBytes).toBeLessThan(1024 * MIB * 1.05);
    expect(fileBytes % 4096).toBe(0);
  });

  it('keeps a floor of inodes for small limits and the walk cap for large ones', () => {
    expect(diskLayout(MIB).inodes).toBe(16_384);
    expect(diskLayout(100 * 1024 ** 3).inodes).toBe(MAX_INODES);
  });
});

describe('parseMountInfo', () => {
  it('reads the device and the mount point, octal escapes undone', () => {
    const line = '36 35 7:3 /v /var/lib/a\\040b/_data rw,relatime shared:1 - ext4 /dev/loop3 rw\n';
    expect(parseMountInfo(line)).toEqual([
      { id: 36, number: '7:3', mountPoint: '/var/lib/a b/_data', shared: true },
    ]);
    const plain = '22 27 0:21 / /proc rw,relatime - proc proc rw';
    expect(parseMountInfo(plain)[0]?.shared).toBe(false);
  });
});

const root = process.getuid?.() === 0;
const podman = VARIANTS['podman-rootful'];

// Real loop devices and mounts: as root only.
describe.skipIf(!root)('a sized disk', { timeout: 60_000 }, () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'cw-sized-disk-'));
  });
  afterAll(async () => {
    await releaseSizedDisks(base).catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  });

  const mounts = () => readFile('/proc/self/mountinfo', 'utf8');
  const attached = async (under: string) => (await execa('losetup', ['-a'])).stdout.includes(under);

  it('holds a writer at its limit, and says it is full', async () => {
    const task = await mkdtemp(join(base, 'task-'));
    const disk = await createSizedDisk(task, 'disk-train', 20 * MIB);
    await mkdir(join(disk.dir, 'v'));
    await settleBaseline(disk);
    expect((await sizedDiskUsage(disk)).full).toBe(false);
    // 8 MiB writes: the last one is refused whole, short of the last free block.
    const dd = await execa('dd', ['if=/dev/zero', `of=${disk.dir}/v/f`, 'bs=8M', 'count=10'], {
      reject: false,
    });
    expect(dd.stderr).toContain('No space left on device');
    const usage = await sizedDiskUsage(disk);
    expect(usage.full).toBe(true);
    expect(usage.bytes).toBeGreaterThan(19 * MIB);
    expect(usage.bytes).toBeLessThan(21 * MIB);
    expect(await releaseSizedDisks(task)).toMatchObject({ mounts: [disk.dir] });
    expect(await mounts()).not.toContain(task);
    expect(await attached(task)).toBe(false);
  });

  it("releases what a killed worker left, binds and deleted files too, and not a sibling's", async () => {
    const killed = await mkdtemp(join(base, 'worker-a-'));
    // A name that starts with the killed worker's: only its own folder is its.
    const sibling = `${killed}-sibling`;
    await mkdir(sibling);
    const volumeDir = await mkdtemp(join(base, 'volume-'));
    const left = await createSizedDisk(killed, 'disk-train', 8 * MIB);
    await bindVolume(left, 'cw-vol-1', volumeDir);
    const other = await createSizedDisk(sibling, 'disk-train', 8 * MIB);
    await rm(left.image); // the loop device still backs it: "(deleted)"
    const released = await releaseSizedDisks(killed);
    expect(new Set(released.mounts)).toEqual(new Set([left.dir, volumeDir]));
    const table = await mounts();
    expect(table).not.toContain(`${killed}/`);
    expect(table).not.toContain(volumeDir);
    expect(await attached(`${killed}/`)).toBe(false);
    expect(table).toContain(other.dir);
    await releaseSizedDisks(sibling);
    expect(await attached(sibling)).toBe(false);
    expect(await readdir(volumeDir)).toEqual([]);
  });
});

// A host whose mounts are private (no systemd): the test makes its own private mount.
describe.skipIf(!root)('a sized disk on a host without shared mounts', { timeout: 60_000 }, () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'cw-sized-private-'));
    await execa('mount', ['--bind', base, base]);
    await execa('mount', ['--make-private', base]);
  });
  afterAll(async () => {
    await releaseSizedDisks(base).catch(() => undefined);
    await execa('umount', [base], { reject: false });
    await rm(base, { recursive: true, force: true });
  });

  it('is released in a mount namespace copied while it was mounted (a rootless pause process)', async () => {
    const task = await mkdtemp(join(base, 'task-'));
    const volumeDir = await mkdtemp(join(base, 'volume-'));
    const disk = await createSizedDisk(task, 'disk-train', 8 * MIB);
    await bindVolume(disk, 'cw-vol-1', volumeDir);
    // As rootless podman's pause process does: a namespace of its own, its copies slaves.
    const holder = execa('unshare', ['-m', '--propagation', 'slave', 'sleep', '120'], {
      reject: false,
    });
    try {
      const copied = `/proc/${holder.pid}/mountinfo`;
      await until(() => readFileSync(copied, 'utf8').includes(disk.dir), 10_000, 'the copy');
      expect(await readFile(copied, 'utf8')).toContain(volumeDir);
      await releaseSizedDisks(task);
      await rm(disk.image);
      expect(await attachedLoops(task, 5_000)).toEqual([]);
      expect(await readFile(copied, 'utf8')).not.toContain(task);
      expect(await readFile(copied, 'utf8')).not.toContain(volumeDir);
    } finally {
      holder.kill('SIGKILL');
      await holder;
    }
  });
});

describe.skipIf(!root || unavailableUnlessRequired(podman) !== undefined)(
  'doctor disk-bound',
  () => {
    it('passes as root with rootful podman, after making and releasing a filesystem', async () => {
      const engine = await createEngine(podman.options);
      const dir = await mkdtemp(join(tmpdir(), 'cw-disk-bound-test-'));
      try {
        const check = await diskBoundCheck(engine.info, dir);
        expect(check.status, check.message).toBe('pass');
        expect(check.message).toMatch(/^hard: a sized filesystem per task step .* in \d+ ms\)$/);
        expect(await readdir(dir)).toEqual([]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('warns "poll only" with why elsewhere', async () => {
      const engine = await createEngine(podman.options);
      const rootless: EngineInfo = { ...engine.info, rootless: true };
      const docker: EngineInfo = { ...engine.info, name: 'docker' };
      const remote: EngineInfo = { ...engine.info, engineHost: 'ssh://elsewhere' };
      const checks = await Promise.all([
        diskBoundCheck(rootless, tmpdir()),
        diskBoundCheck(docker, tmpdir()),
        diskBoundCheck(remote, tmpdir()),
        diskBoundCheck(engine.info, tmpdir(), 'poll'),
      ]);
      expect(checks.map((c) => c.status)).toEqual(['warn', 'warn', 'warn', 'warn']);
      expect(checks.map((c) => c.message.split('.')[0])).toEqual([
        'poll only: the worker does not run as root with rootful podman: it cannot mount a filesystem',
        "poll only: docker's volumes are mounted by dockerd, which need not see this worker's mounts (another mount namespace)",
        "poll only: the engine is remote: its volumes are on another host's disk",
        'poll only: --disk-bound poll',
      ]);
    });
  },
);
