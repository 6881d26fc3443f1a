import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { imageCacheCheck, readableBytes } from '../../src/doctor/image-cache.js';
import { execEngine, execEngineRaw } from '../../src/engine/exec.js';
import { ImageCache } from '../../src/engine/image-cache.js';
import { LABEL_BUILT_BY, LABEL_WORKER } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { Engine } from '../../src/engine/types.js';
import { busyboxContext } from '../support/busybox-context.js';
import { readableOf } from '../support/engine-tar.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];
/** The podman wrapper that logs each call's arguments. */
const wrapperOf = (dir: string) => join(dir, 'podman');
const why = unavailableUnlessRequired(variant);

/**
 * The bounded image cache with real builds. Every image here is labelled with a worker id
 * of this run only, and only those images (and a container of this run) are removed.
 */
// Each case builds several images: minutes on a busy 2-core machine.
describe.skipIf(why)('image cache (rootful podman)', { timeout: 300_000 }, () => {
  const run = randomBytes(4).toString('hex');
  const workerId = `imgcache-test-${run}`;
  const label = { [LABEL_BUILT_BY]: workerId };
  const containerLabels = { [LABEL_WORKER]: workerId };
  let engine: Engine;
  let dir: string;
  let buildLog: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-imgcache-'));
    // Counts the builds the engine is asked for.
    buildLog = join(dir, 'calls.log');
    const wrapper = wrapperOf(dir);
    await writeFile(wrapper, `#!/bin/sh\necho "$*" >> '${buildLog}'\nexec /usr/bin/podman "$@"\n`);
    await chmod(wrapper, 0o755);
    // Builds as the host's root: the build user could not run this root-only wrapper.
    engine = await createEngine({ ...variant.options, enginePath: wrapper, buildUser: 'none' });
  });

  afterAll(async () => {
    if (!engine) return;
    await engine.removeByLabels(containerLabels);
    for (const image of await engine.listImages(label)) {
      await execEngineRaw(engine.info, ['rmi', '--force', image.id], { timeoutMs: 60_000 });
    }
    await rm(dir, { recursive: true, force: true });
  });

  const contextOf = (name: string, extraLines: string[] = []) =>
    busyboxContext({ extraLines: [`ENV CACHE_TEST=${run}-${name}`, ...extraLines] });

  const newCache = (maxBytes: number) =>
    new ImageCache({ engine, workerId, maxBytes, file: join(dir, 'image-cache.json') });

  /** Builds an image as a task does: held from before the lookup until released. */
  async function use(
    cache: ImageCache,
    name: string,
  ): Promise<{ image: string; release: () => void }> {
    let release = () => {};
    const result = await engine.buildImage({
      role: `cachetest-${name}`,
      context: readableOf(await contextOf(name)),
      labels: label,
      onImage: async (image) => {
        release = await cache.hold(image);
      },
    });
    return { image: result.image, release };
  }

  const exists = async (image: string) =>
    (await execEngineRaw(engine.info, ['image', 'exists', image], { timeoutMs: 60_000 }))
      .exitCode === 0;

  const sizeOf = async (image: string) =>
    (await engine.listImages(label)).find((i) => i.names.includes(image))?.sizeBytes ?? 0;

  const calls = async () =>
    (await readFile(buildLog, 'utf8')).split('\n').filter((line) => line !== '');

  const builds = async () =>
    // The verb comes after the global flags of a build's own store (--root ...).
    (await readFile(buildLog, 'utf8')).split('\n').filter((line) => / build /.test(` ${line} `))
      .length;

  it('removes the least recently used image, and a new cache object still knows the uses', async () => {
    const unbounded = newCache(Number.MAX_SAFE_INTEGER);
    const a = await use(unbounded, 'lru-a');
    a.release();
    const b = await use(unbounded, 'lru-b');
    b.release();
    const c = await use(unbounded, 'lru-c');
    c.release();
    // A is used again: B is now the least recently used, though A is the oldest.
    const again = await use(unbounded, 'lru-a');
    expect(again.image).toBe(a.image);
    again.release();
    expect((await unbounded.trim()).removed).toEqual([]);

    // A restart: a new object on the same state file, with a bound that fits two.
    const sizes = await Promise.all([a, b, c].map((x) => sizeOf(x.image)));
    expect(sizes.every((size) => size > 0)).toBe(true);
    const restarted = newCache(Math.max(...sizes) * 2 + 1024);
    const before = await restarted.summary();
    expect(before.images).toBeGreaterThanOrEqual(3);
    const result = await restarted.trim();
    expect(result.removed).toEqual([b.image]);
    expect(await exists(b.image)).toBe(false);
    expect(await exists(a.image)).toBe(true);
    expect(await exists(c.image)).toBe(true);
    expect(result.bytes).toBeLessThanOrEqual(result.maxBytes);
    for (const image of [a.image, c.image]) {
      await execEngine(engine.info, ['rmi', image], { timeoutMs: 60_000 });
    }
  });

  it('never removes an image a task holds or a container uses, even the least recently used', async () => {
    // A long task took `held` first: it is the least recently used.
    const probe = await use(newCache(Number.MAX_SAFE_INTEGER), 'held');
    probe.release();
    const tight = newCache((await sizeOf(probe.image)) + 1024);
    const held = { image: probe.image, release: await tight.hold(probe.image) };
    const used = await use(tight, 'used');
    used.release();
    const free = await use(tight, 'free');
    free.release();
    // A container of another worker on the host uses `used`.
    await execEngine(
      engine.info,
      ['create', '--label', `${LABEL_WORKER}=${workerId}`, used.image, '/bin/true'],
      { timeoutMs: 60_000 },
    );
    const first = await tight.trim();
    expect(first.removed).toEqual([free.image]);
    expect(first.kept).toEqual([held.image, used.image]);
    expect(await exists(held.image)).toBe(true);
    expect(await exists(used.image)).toBe(true);

    // The task ends: its image goes, the one the container uses stays.
    held.release();
    const second = await tight.trim();
    expect(second.removed).toEqual([held.image]);
    expect(await exists(held.image)).toBe(false);
    expect(await exists(used.image)).toBe(true);
    await engine.removeByLabels(containerLabels);
    await execEngine(engine.info, ['rmi', used.image], { timeoutMs: 60_000 });
  });

  it('builds an image once for two calls at the same time', async () => {
    const context = await contextOf('twice');
    const before = await builds();
    const results = await Promise.all(
      [1, 2].map(() =>
        engine.buildImage({ role: 'cachetest-twice', context: readableOf(context), labels: label }),
      ),
    );
    expect(await builds()).toBe(before + 1);
    expect(results.map((r) => r.image)[0]).toBe(results[1]?.image);
    expect(results.filter((r) => !r.cached)).toHaveLength(1);
    expect(results.filter((r) => r.joined)).toHaveLength(1);
    expect(await exists(results[0]?.image ?? '')).toBe(true);

    // doctor's finding: the one image this worker has now, against the bound.
    const file = join(dir, 'image-cache.json');
    const size = readableBytes(await sizeOf(results[0]?.image ?? ''));
    expect(await imageCacheCheck(engine, { workerId, maxBytes: 2 ** 30, file })).toEqual({
      name: 'image-cache',
      status: 'pass',
      message: `1 image, ${size} of 1g`,
    });
    expect(await imageCacheCheck(engine, { workerId, maxBytes: 1024, file })).toMatchObject({
      status: 'warn',
      message: `1 image, ${size} of 1k: over its bound`,
    });
  });

  it('asks whether two images exist in one engine call, and a build that fails first does not hold the other', async () => {
    const kept = await use(newCache(2 ** 40), 'lookup-kept');
    kept.release();
    // A new process's engine: it has not seen the image yet.
    const fresh = await createEngine({
      ...variant.options,
      enginePath: wrapperOf(dir),
      buildUser: 'none',
    });
    const before = (await calls()).length;
    const lookup = fresh.imageLookup(2);
    const [cached, built] = await Promise.all(
      ['lookup-kept', 'lookup-new'].map(async (name) =>
        fresh.buildImage({
          role: `cachetest-${name}`,
          context: readableOf(await contextOf(name)),
          labels: label,
          lookup,
        }),
      ),
    );
    expect(cached).toMatchObject({ image: kept.image, cached: true });
    expect(built?.cached).toBe(false);
    // The lookups only: the build's own inspects of the image it made come later.
    const asked = (await calls())
      .slice(before)
      .filter((line) => line.startsWith('image exists') || line.includes('.RepoTags'));
    // In whichever order the two contexts were hashed.
    expect(asked).toHaveLength(1);
    expect(asked[0]?.split(' ').slice(0, 4)).toEqual(['image', 'inspect', '--format', '{{json']);
    expect(asked[0]?.split(' ').slice(5).sort()).toEqual([kept.image, built?.image].sort());

    const other = fresh.imageLookup(2);
    const again = await contextOf('lookup-new');
    const [refused, found] = await Promise.allSettled([
      fresh.buildImage({
        role: 'Not A Role',
        context: readableOf(Buffer.alloc(0)),
        labels: label,
        lookup: other,
      }),
      fresh.buildImage({
        role: 'cachetest-lookup-new',
        context: readableOf(again),
        labels: label,
        lookup: other,
      }),
    ]);
    expect(refused).toMatchObject({ status: 'rejected', reason: { code: 'INTERNAL' } });
    expect(found).toMatchObject({ status: 'fulfilled', value: { cached: true } });
  });

  it('a build shared by two calls goes on when the first is cancelled', async () => {
    const context = await contextOf('cancel', ['RUN ["/bin/busybox","sleep","2"]']);
    const before = await builds();
    const first = new AbortController();
    let secondStarted!: () => void;
    const started = new Promise<void>((resolve) => {
      secondStarted = resolve;
    });
    const firstBuild = engine
      .buildImage({
        role: 'cachetest-cancel',
        context: readableOf(context),
        labels: label,
        signal: first.signal,
        // Once the build runs, the second call comes.
        onOutputLine: () => secondStarted(),
      })
      .catch((error: unknown) => error);
    await started;
    const second = engine.buildImage({
      role: 'cachetest-cancel',
      context: readableOf(context),
      labels: label,
      // It has joined the first once this returns: cancel the first then.
      onImage: () => {
        setImmediate(() => first.abort());
      },
    });
    expect(await firstBuild).toMatchObject({ code: 'CANCELLED' });
    const result = await second;
    expect(result).toMatchObject({ cached: true, joined: true });
    expect(await exists(result.image)).toBe(true);
    expect(await builds()).toBe(before + 1);
  });

  it('removes the dangling layers of a failed build of this worker', async () => {
    const context = await contextOf('failed', [
      'RUN ["/bin/busybox","touch","/layer"]',
      'RUN ["/bin/busybox","false"]',
    ]);
    const error = await engine
      // The workflow's build: an untrusted one runs with --layers=false and leaves none.
      .buildImage({ role: 'workflow', context: readableOf(context), labels: label })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BUILD_FAILED' });
    const dangling = (await engine.listImages(label)).filter((i) => i.names.length === 0);
    expect(dangling.length).toBeGreaterThan(0);
    await newCache(Number.MAX_SAFE_INTEGER).trim();
    const left = (await engine.listImages(label)).filter((i) => i.names.length === 0);
    expect(left).toEqual([]);
  });

  it('asks whether an image exists once per process, and again once it went behind its back', async () => {
    const build = async () =>
      engine.buildImage({
        role: 'cachetest-known',
        context: readableOf(await contextOf('known')),
        labels: label,
      });
    const first = await build();
    const asked = async () =>
      (await readFile(buildLog, 'utf8')).split('\n').filter((l) => l === 'image').length;
    const before = await asked();
    expect(await build()).toMatchObject({ cached: true });
    expect(await asked()).toBe(before);
    // An operator removes it: the container cannot be created, and the next build builds.
    await execEngine(engine.info, ['rmi', '--force', first.image], { timeoutMs: 60_000 });
    const failed = await engine
      .run({
        image: first.image,
        command: ['true'],
        mounts: [],
        labels: containerLabels,
        limits: { ...DEFAULT_LIMITS },
        timeoutMs: 30_000,
        logTailLines: 10,
        logTailBytes: 1024,
      })
      .catch((e: unknown) => e);
    expect(failed).toMatchObject({ code: 'ENGINE_FAILED' });
    const builtBefore = await builds();
    expect(await build()).toMatchObject({ cached: false });
    expect(await builds()).toBe(builtBefore + 1);
    expect(await exists(first.image)).toBe(true);
  });
});
