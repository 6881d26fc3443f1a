import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freeBytes, lowestBelow } from '../../src/config/free-space.js';
import type { Logger } from '../../src/log.js';
import { DiskGate } from '../../src/worker/disk-gate.js';

// The daemon's decision to take a task or hand it back when the host is short of disk.

describe('lowestBelow', () => {
  const storage = { what: "the engine's storage", path: '/var/lib/containers', freeBytes: 500 };
  const temp = { what: "the worker's temp folder", path: '/tmp', freeBytes: 100 };

  it('names the folder with the least room among those under the minimum', () => {
    expect(lowestBelow([storage, temp], 1000)).toEqual(temp);
    expect(lowestBelow([storage, temp], 200)).toEqual(temp);
    expect(lowestBelow([storage, { ...temp, freeBytes: 900 }], 600)).toEqual(storage);
    // One filesystem read twice: a few bytes apart, the first named is reported.
    const big = { ...storage, freeBytes: 10 * 1024 ** 3 };
    expect(
      lowestBelow([big, { ...temp, freeBytes: big.freeBytes - 4096 }], 100 * 1024 ** 3),
    ).toEqual(big);
  });

  it('lets a task start when every folder has at least the minimum', () => {
    expect(lowestBelow([storage, temp], 100)).toBeUndefined();
    expect(lowestBelow([], 100)).toBeUndefined();
  });
});

describe('DiskGate', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-disk-gate-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  function recorder() {
    const lines: { level: string; msg: string }[] = [];
    const log = {
      warn: (_fields: unknown, msg: string) => lines.push({ level: 'warn', msg }),
      info: (_fields: unknown, msg: string) => lines.push({ level: 'info', msg }),
    } as unknown as Logger;
    return { lines, log };
  }

  it('refuses while a folder is short, logging once per low period', async () => {
    const { lines, log } = recorder();
    const options = { folders: [{ what: "the worker's temp folder", path: dir }], log };
    const free = await freeBytes(dir);
    const gate = new DiskGate({ ...options, minFreeBytes: free * 1000 });
    expect(await gate.check()).toMatchObject({ path: dir });
    expect(await gate.check()).toMatchObject({ path: dir });
    expect(lines).toHaveLength(1);
    expect(lines[0]?.level).toBe('warn');
    expect(lines[0]?.msg).toMatch(
      new RegExp(
        `not taking tasks: the worker's temp folder ${dir} has .* free, less than --min-free-disk`,
      ),
    );
  });

  it('takes tasks again when there is room, and says so once', async () => {
    const { lines, log } = recorder();
    const folders = [{ what: "the worker's temp folder", path: dir }];
    let minFreeBytes = Number.MAX_SAFE_INTEGER;
    const gate = new DiskGate({
      folders,
      log,
      get minFreeBytes() {
        return minFreeBytes;
      },
    });
    expect(await gate.check()).toBeDefined();
    minFreeBytes = 1;
    expect(await gate.check()).toBeUndefined();
    expect(await gate.check()).toBeUndefined();
    expect(lines.map((l) => l.level)).toEqual(['warn', 'info']);
    expect(lines[1]?.msg).toContain('taking tasks again');
  });

  it('skips a folder it cannot measure (a remote engine), warning once', async () => {
    const { lines, log } = recorder();
    const missing = join(dir, 'not-here');
    const gate = new DiskGate({
      folders: [
        { what: "the engine's storage", path: missing },
        { what: "the worker's temp folder", path: dir },
      ],
      minFreeBytes: 1,
      log,
    });
    expect(await gate.check()).toBeUndefined();
    expect(await gate.check()).toBeUndefined();
    expect(lines).toHaveLength(1);
    expect(lines[0]?.msg).toContain(
      `cannot read the free space of the engine's storage ${missing}`,
    );
  });
});
