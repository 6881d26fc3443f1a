import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Parser } from '@oclif/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { taskFlags } from '../../src/cli/flags.js';
import { dataCacheFor } from '../../src/cli/settings.js';
import { canRevalidate, sameBlob, validatorsFrom } from '../../src/clients/blob-validators.js';
import { mountArgs } from '../../src/engine/args.js';
import { cacheVolumeName, dataSetKey } from '../../src/tasks/data-cache.js';
import { lockStaging, removeIdleFolders, takeLease } from '../../src/tasks/data-cache-index.js';

// The pure parts of the host's data cache: what storage's headers say about a blob, when a
// cached blob counts as the same, the key of a set, its volumes' mounts, and the flags.

const SHA = Buffer.alloc(32, 1).toString('base64');
const OTHER = Buffer.alloc(32, 2).toString('base64');

describe('blob validators', () => {
  it('reads a sha-256 from Repr-Digest, Content-Digest or Digest, with ETag and length', () => {
    expect(validatorsFrom({ 'repr-digest': `sha-512=:AAAA:, sha-256=:${SHA}:` })).toEqual({
      sha256: SHA,
    });
    expect(validatorsFrom({ 'content-digest': `sha-256=:${SHA}:` }).sha256).toBe(SHA);
    expect(validatorsFrom({ digest: `MD5=abc, SHA-256=${SHA}` }).sha256).toBe(SHA);
    expect(validatorsFrom({ etag: '"v1"', 'content-length': '12' })).toEqual({
      etag: '"v1"',
      size: 12,
    });
    expect(validatorsFrom({ 'repr-digest': 'sha-256=nocolons', 'content-length': 'x' })).toEqual(
      {},
    );
  });

  it('a cached blob is the same only by its digest, or by a strong ETag and its length', () => {
    const recorded = { sha256: SHA, etag: '"v1"', size: 12 };
    expect(sameBlob(recorded, { sha256: SHA })).toBe(true);
    expect(sameBlob(recorded, { sha256: OTHER, etag: '"v1"', size: 12 })).toBe(false);
    expect(sameBlob(recorded, { etag: '"v1"', size: 12 })).toBe(true);
    expect(sameBlob(recorded, { etag: '"v1"', size: 13 })).toBe(false);
    expect(sameBlob(recorded, { etag: '"v1"' })).toBe(false);
    expect(sameBlob({ ...recorded, etag: 'W/"v1"' }, { etag: 'W/"v1"', size: 12 })).toBe(false);
    expect(sameBlob(recorded, { size: 12 })).toBe(false);
  });

  it('a blob can be checked again only with a digest, or a strong ETag and a length', () => {
    expect(canRevalidate({ sha256: SHA })).toBe(true);
    expect(canRevalidate({ etag: '"v1"', size: 1 })).toBe(true);
    expect(canRevalidate({ etag: 'W/"v1"', size: 1 })).toBe(false);
    expect(canRevalidate({ etag: '"v1"' })).toBe(false);
    expect(canRevalidate({ size: 1 })).toBe(false);
  });
});

describe('cached data sets', () => {
  const owner = { uid: 1000, gid: 1000 };
  it('keys a set by its uuids in order, the owner, the folders and the storage', () => {
    const from = 'storage http://10.0.0.5:8000';
    const key = dataSetKey({ uuids: ['a', 'b'], dirs: ['pred'] }, owner, from);
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(dataSetKey({ uuids: ['a', 'b'], dirs: ['pred'] }, owner, from)).toBe(key);
    expect(dataSetKey({ uuids: ['b', 'a'], dirs: ['pred'] }, owner, from)).not.toBe(key);
    expect(dataSetKey({ uuids: ['a', 'b'], dirs: [] }, owner, from)).not.toBe(key);
    const other = { uid: 1001, gid: 1000 };
    expect(dataSetKey({ uuids: ['a', 'b'], dirs: ['pred'] }, other, from)).not.toBe(key);
    // The same uuid on another platform's storage is another set.
    const elsewhere = 'storage http://10.0.0.6:8000';
    expect(dataSetKey({ uuids: ['a', 'b'], dirs: ['pred'] }, owner, elsewhere)).not.toBe(key);
    expect(cacheVolumeName(key)).toMatch(new RegExp(`^cw-data-${key.slice(0, 24)}[0-9a-f]{8}$`));
  });

  it("mounts a shared volume read-only and never gives it to one container's ids", () => {
    const mounts = [
      { volume: 'cw-data-1', target: '/data/train', readOnly: true, shared: true },
      { volume: 'cw-vol-2', target: '/data/model' },
    ];
    expect(mountArgs(mounts, true)).toEqual([
      '-v',
      'cw-data-1:/data/train:ro',
      '-v',
      'cw-vol-2:/data/model:U',
    ]);
    expect(mountArgs([{ volume: 'cw-data-1', target: '/t', shared: true }])).toEqual([
      '-v',
      'cw-data-1:/t:ro',
    ]);
  });
});

describe('--data-cache-size and --data-cache-dir', () => {
  const saved: Record<string, string | undefined> = {};
  beforeEach(() => {
    for (const name of Object.keys(process.env).filter((n) => n.startsWith('COMPUTE_WORKER_'))) {
      saved[name] = process.env[name];
      delete process.env[name];
    }
    saved.XDG_CACHE_HOME = process.env.XDG_CACHE_HOME;
    delete process.env.XDG_CACHE_HOME;
  });
  afterEach(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it('is off by default and with 0, on with a size, in a host-wide folder for root', async () => {
    const parse = async (argv: string[]) =>
      dataCacheFor((await Parser.parse(argv, { flags: taskFlags })).flags);
    expect(await parse([])).toBeUndefined();
    expect(await parse(['--data-cache-size', '0'])).toBeUndefined();
    const root = process.getuid?.() === 0;
    expect(await parse(['--data-cache-size', '20g'])).toEqual({
      dir: root
        ? '/var/lib/compute-worker/data-cache'
        : join(homedir(), '.cache', 'compute-worker', 'data-cache'),
      maxBytes: 20 * 1024 ** 3,
    });
    expect(await parse(['--data-cache-size', '1m', '--data-cache-dir', '/srv/cache'])).toEqual({
      dir: '/srv/cache',
      maxBytes: 1024 ** 2,
    });
  });
});

describe('the folders the data cache leaves', () => {
  const HOUR = 60 * 60 * 1000;
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-cache-folders-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const old = (path: string) =>
    utimes(path, new Date(Date.now() - 2 * HOUR), new Date(Date.now() - 2 * HOUR));

  it('removes idle staging folders and the leases of volumes the index no longer names', async () => {
    const key = (c: string) => c.repeat(64);
    for (const k of ['a', 'b', 'c']) await mkdir(join(dir, 'staging', key(k)), { recursive: true });
    const held = await lockStaging(dir, key('c'));
    await old(join(dir, 'staging', key('a')));
    await old(join(dir, 'staging', key('c')));
    // A lease of a dead process on a dropped volume, and a live one on a dropped volume.
    const gone = join(dir, 'leases', 'cw-data-gone', 'run1');
    await mkdir(gone, { recursive: true });
    await writeFile(
      join(gone, 'lock'),
      JSON.stringify({ pid: 999_999_999, start: '1', boot: 'x' }),
    );
    const live = await takeLease(dir, 'cw-data-live', { workerId: 'w', runId: 'r' });
    const removed = await removeIdleFolders(dir);
    expect(removed.sort()).toEqual(
      [join(dir, 'staging', key('a')), join(dir, 'leases', 'cw-data-gone')].sort(),
    );
    expect((await readdir(join(dir, 'staging'))).sort()).toEqual([key('b'), key('c')]);
    held.release();
    live();
    // Once released and idle for an hour, those go too.
    await old(join(dir, 'staging', key('c')));
    expect(await removeIdleFolders(dir)).toContain(join(dir, 'staging', key('c')));
    expect(await readdir(join(dir, 'leases'))).toEqual([]);
  });
});
