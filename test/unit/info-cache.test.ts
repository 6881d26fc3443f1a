import { chmod, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { detectEngine } from '../../src/engine/detect.js';
import {
  INFO_CACHE_MAX_AGE_MS,
  infoCacheKey,
  readInfoCache,
  writeInfoCache,
} from '../../src/engine/info-cache.js';

// A podman stand-in that answers `info` and counts how often it was asked.
const INFO = {
  host: {
    cgroupVersion: 'v2',
    security: { rootless: false },
    ociRuntime: { name: 'crun' },
    cgroupControllers: ['memory', 'pids', 'cpu'],
  },
  store: { graphDriverName: 'overlay', graphRoot: '/var/lib/containers/storage' },
  version: { Version: '4.3.1' },
};

describe('the cached podman info of `task exec`', () => {
  let dir: string;
  let cli: string;
  let cache: string;
  const asked = async () => (await readFile(join(dir, 'asked'), 'utf8').catch(() => '')).length;
  const detect = () =>
    detectEngine({
      engine: 'podman',
      enginePath: cli,
      callTimeoutMs: 10_000,
      infoCacheFile: cache,
    });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-info-'));
    cli = join(dir, 'podman');
    cache = join(dir, 'engine-info.json');
    await writeFile(cli, `#!/bin/sh\nprintf x >>'${dir}/asked'\necho '${JSON.stringify(INFO)}'\n`);
    await chmod(cli, 0o755);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('asks podman once, then answers from the state folder', async () => {
    const first = await detect();
    const second = await detect();
    expect(await asked()).toBe(1);
    expect(second).toEqual(first);
    expect(first).toMatchObject({ name: 'podman', version: '4.3.1', rootless: false });
  });

  it('asks again once the CLI binary changed', async () => {
    await detect();
    await utimes(cli, new Date(), new Date(Date.now() + 5_000));
    await detect();
    expect(await asked()).toBe(2);
  });

  it('asks again without a cache file, or with one of another key or too old', async () => {
    await detectEngine({ engine: 'podman', enginePath: cli, callTimeoutMs: 10_000 });
    await detectEngine({ engine: 'podman', enginePath: cli, callTimeoutMs: 10_000 });
    expect(await asked()).toBe(2);
    const key = await infoCacheKey(cli);
    await writeInfoCache(cache, key, { name: 'podman' });
    expect(await readInfoCache(cache, key)).toEqual({ name: 'podman' });
    expect(await readInfoCache(cache, 'another key')).toBeUndefined();
    expect(await readInfoCache(cache, key, Date.now() + INFO_CACHE_MAX_AGE_MS + 1)).toBeUndefined();
    await writeFile(cache, '{ not json');
    expect(await readInfoCache(cache, key)).toBeUndefined();
  });
});
