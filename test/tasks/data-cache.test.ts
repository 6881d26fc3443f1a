import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTime } from '../../src/config/state-lock.js';
import { LABEL_DATA_CACHE, LABEL_WORKER } from '../../src/engine/labels.js';
import { createLogger } from '../../src/log.js';
import type { TaskEnv } from '../../src/tasks/context.js';
import { cacheDirLabel, sweepDataCache } from '../../src/tasks/data-cache.js';
import { takeLease } from '../../src/tasks/data-cache-index.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  learnTaskJson,
  leftovers,
  newIds,
  type Outcome,
  podman,
  podmanMissing,
  readTarGz,
  runTask,
  seedRunner,
  serviceOptions,
  startWorld,
  type TaskWorld,
  tarGz,
} from '../support/task-fixtures.js';

// The host's data cache, with the script runner as workflow and submission (see
// scriptRunnerContext): the train set's files run as the submission's train step, the
// hidden test set's as the workflow's scorer. A script ends at `exit 0`, so the padding
// after it only makes the blob long: storage sends it slowly enough (about 300 ms) that a
// download read for its headers alone is seen cut off at the storage stand-in.

const MIB = 1024 ** 2;
const PAD = 4 * MIB;
const cli = podman.options.enginePath as string;

const padded = (script: string, pad = PAD) =>
  Buffer.concat([Buffer.from(`${script}\nexit 0\n`), Buffer.alloc(pad, 'x')]);

/** Writes a model, with what the container sees of its data, as the train step. */
const trainer = (version: string) =>
  padded(
    [
      `echo "model ${version}" > /data/model/model.txt`,
      'if touch /data/train/probe 2>/dev/null; then echo "train: writable"; else echo "train: read-only"; fi >> /data/model/seen.txt',
      'if [ -e /hidden_data ]; then echo "hidden: mounted"; else echo "hidden: absent"; fi >> /data/model/seen.txt',
    ].join('\n'),
  );

const scorer = (perf: number, pad = PAD) =>
  padded(
    `echo '{"perf": ${perf}, "train_perf": {}, "test_perf": {}}' > /hidden_data/perf/performance.json`,
    pad,
  );

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'data staged once per host',
  { timeout: 600_000 },
  () => {
    let world: TaskWorld;
    let runner = '';
    const dirs: string[] = [];
    const log = createLogger({ level: 'error', format: 'json' });

    beforeAll(async () => {
      world = await startWorld();
      runner = await seedRunner(world);
      world.storage.pace(64 * 1024, 5);
    });

    afterAll(async () => {
      // What a failed assertion left: the volumes of this file's cache folders only.
      for (const dir of dirs) {
        const env = await world.env();
        for (const volume of await env.engine.listVolumes(cacheDirLabel(dir))) {
          await execa(cli, ['volume', 'rm', '--force', volume.name]);
        }
        await rm(dir, { recursive: true, force: true });
      }
      await world?.close();
    });

    async function cacheEnv(maxBytes = 1024 * MIB, dir?: string): Promise<TaskEnv> {
      const folder = dir ?? (await mkdtemp(join(tmpdir(), 'cw-data-cache-')));
      if (!dirs.includes(folder)) dirs.push(folder);
      return world.env({ dataCache: { dir: folder, maxBytes } });
    }

    function data(blob: Buffer): string {
      const { uuid } = newIds('uuid');
      world.storage.seed('data', uuid, { blob });
      return uuid;
    }

    const learn = (train: string[], test: string[]) => learnTaskJson(runner, train, test);

    /** The blob GETs of these uuids from request `from` on: whole downloads and cut-off ones. */
    function blobGets(uuids: string[], from: number) {
      const gets = world.storage.requests
        .slice(from)
        .filter((r) => r.method === 'GET' && uuids.some((u) => r.path === `/data/${u}/blob`));
      return {
        whole: gets.filter((r) => r.completed === true).map((r) => r.path),
        headersOnly: gets.filter((r) => r.completed === false).map((r) => r.path),
      };
    }

    const stagedData = (outcome: Outcome) =>
      outcome.events.flatMap((e) =>
        e.type === 'staged' && e.name.startsWith('data/') ? [e.name.slice(5)] : [],
      );
    const stageNote = (outcome: Outcome) =>
      outcome.report.steps.find((s) => s.step === 'stage')?.note;

    async function entries(dir: string) {
      const names = await readdir(join(dir, 'entries')).catch(() => [] as string[]);
      return Promise.all(
        names.map(async (n) => JSON.parse(await readFile(join(dir, 'entries', n), 'utf8'))),
      );
    }

    const volumeExists = async (name: string) =>
      (await execa(cli, ['volume', 'exists', name], { reject: false })).exitCode === 0;

    function expectDone(outcome: Outcome) {
      expect(outcome.report.error?.describe()).toBeUndefined();
      expect(outcome.report.status).toBe('done');
    }

    it('a second task on the same sets downloads neither, and learns the same', async () => {
      const env = await cacheEnv();
      const train = [data(trainer('v1'))];
      const test = [data(scorer(0.25))];
      const first = await runTask(world, env, learn(train, test));
      expectDone(first);
      expect(stagedData(first).sort()).toEqual([...train, ...test].sort());

      const before = world.storage.requests.length;
      const second = await runTask(
        world,
        await cacheEnv(1024 * MIB, env.dataCache?.dir),
        learn(train, test),
      );
      expectDone(second);
      expect(stagedData(second)).toEqual([]);
      const gets = blobGets([...train, ...test], before);
      expect(gets.whole).toEqual([]);
      expect(gets.headersOnly.sort()).toEqual(
        [...train, ...test].map((u) => `/data/${u}/blob`).sort(),
      );
      expect(stageNote(second)).toBe('0 bytes (cached: train, hiddenTest)');
      expect(second.report.performance).toEqual(first.report.performance);
      expect(second.report.performance?.perf).toBe(0.25);
      expect(second.logs).toEqual(first.logs);
      const sources = (o: Outcome) =>
        o.events.flatMap((e) => (e.type === 'data-set' ? [`${e.set}: ${e.source}`] : [])).sort();
      expect(sources(first)).toEqual(['hiddenTest: staged-into-cache', 'train: staged-into-cache']);
      expect(sources(second)).toEqual(['hiddenTest: cache', 'train: cache']);
    });

    it('fetches a blob again once storage holds other bytes, and uses them', async () => {
      const env = await cacheEnv();
      const dir = env.dataCache?.dir as string;
      const train = [data(trainer('v1'))];
      const test = [data(scorer(0.25))];
      expectDone(await runTask(world, env, learn(train, test)));
      const old = (await entries(dir)).find((e) => e.uuids[0] === test[0]);
      expect(old?.complete).toBe(true);

      world.storage.changeBlob('data', test[0] as string, scorer(0.75));
      const before = world.storage.requests.length;
      const second = await runTask(world, env, learn(train, test));
      expectDone(second);
      expect(second.report.performance?.perf).toBe(0.75);
      expect(stagedData(second)).toEqual(test);
      expect(blobGets(test, before).whole).toEqual([`/data/${test[0]}/blob`]);
      expect(blobGets(train, before).whole).toEqual([]);
      // The replaced set's volume went once no task mounted it; the new one is cached.
      expect(await volumeExists(old.volume)).toBe(false);
      const now = (await entries(dir)).filter((e) => e.uuids[0] === test[0]);
      expect(now).toHaveLength(1);
      expect(now[0].volume).not.toBe(old.volume);
      expect(now[0].complete).toBe(true);
    });

    it('refuses a blob whose digest is not its bytes, and caches nothing', async () => {
      const env = await cacheEnv();
      const dir = env.dataCache?.dir as string;
      const train = [data(trainer('v1'))];
      world.storage.changeBlob('data', train[0] as string, trainer('v1'), {
        wrongDigest: Buffer.alloc(32, 7).toString('base64'),
      });
      const test = [data(scorer(0.25, 0))];
      const task = learn(train, test);
      const outcome = await runTask(world, env, task);
      expect(outcome.report.status).toBe('failed');
      expect(outcome.report.failedStep).toBe('stage');
      expect(outcome.report.error?.code).toBe('STORAGE_FAILED');
      expect(outcome.report.error?.retryable).toBe(true);
      expect(outcome.report.error?.message).toMatch(/digest/);
      // The hidden test set staged beside it may stay cached; the train set left nothing.
      expect((await entries(dir)).filter((e) => e.uuids[0] === train[0])).toEqual([]);
      const volumes = await env.engine.listVolumes(cacheDirLabel(dir));
      const known = new Set((await entries(dir)).map((e) => e.volume));
      expect(volumes.filter((v) => !known.has(v.name))).toEqual([]);
      expect(await leftovers(task.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    });

    it('stages a set for its task alone when storage gives a blob no validator', async () => {
      const env = await cacheEnv();
      const dir = env.dataCache?.dir as string;
      const train = [data(trainer('v1'))];
      world.storage.changeBlob('data', train[0] as string, trainer('v1'), { noValidators: true });
      const test = [data(scorer(0.25, 0))];
      for (let i = 0; i < 2; i++) {
        const before = world.storage.requests.length;
        const outcome = await runTask(world, env, learn(train, test));
        expectDone(outcome);
        expect(stagedData(outcome)).toContain(train[0]);
        expect(blobGets(train, before).whole).toEqual([`/data/${train[0]}/blob`]);
      }
      expect((await entries(dir)).map((e) => e.uuids)).toEqual([test]);
    });

    it('refuses a wrong digest with the cache off too', async () => {
      const env = await world.env();
      const train = [data(trainer('v1'))];
      world.storage.changeBlob('data', train[0] as string, trainer('v1'), {
        wrongDigest: Buffer.alloc(32, 7).toString('base64'),
      });
      const task = learn(train, [data(scorer(0.25, 0))]);
      const outcome = await runTask(world, env, task);
      expect(outcome.report.error?.code).toBe('STORAGE_FAILED');
      expect(outcome.report.failedStep).toBe('stage');
      expect(await leftovers(task.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    });

    it('evicts the least recently used set, but never one a live process leases', async () => {
      // Room for one 4 MiB train set and the tiny test set, not for two train sets.
      const env = await cacheEnv(6 * MIB);
      const dir = env.dataCache?.dir as string;
      const test = [data(scorer(0.5, 0))];
      const a = [data(padded('echo a > /data/model/m', 4 * MIB))];
      const b = [data(padded('echo b > /data/model/m', 4 * MIB))];
      expectDone(await runTask(world, env, learn(a, test)));
      const ofA = (await entries(dir)).find((e) => e.uuids[0] === a[0]);
      expect(ofA?.complete).toBe(true);

      // Another task of the host mounts set a: b is staged for its task alone.
      const release = await takeLease(dir, ofA.volume, { workerId: 'other', runId: 'run' });
      const leasedRun = await runTask(world, env, learn(b, test));
      release();
      expectDone(leasedRun);
      expect(await volumeExists(ofA.volume)).toBe(true);
      expect((await entries(dir)).map((e) => e.uuids[0])).not.toContain(b[0]);

      const freeRun = await runTask(world, env, learn(b, test));
      expectDone(freeRun);
      expect(await volumeExists(ofA.volume)).toBe(false);
      const kept = (await entries(dir)).map((e) => e.uuids[0]);
      expect(kept).toContain(b[0]);
      expect(kept).not.toContain(a[0]);
    });

    it("a predict task's test set too, and a dead process's lease holds nothing", async () => {
      const env = await cacheEnv();
      const dir = env.dataCache?.dir as string;
      const { uuid: model } = newIds('uuid');
      world.storage.seed('model', model, {
        blob: await tarGz({ 'model.txt': 'weights\n' }),
        meta: { uuid: model, algo: runner, timestamp_upload: 1 },
      });
      const input = data(padded('echo predicted > "/data/test/pred/$(basename "$0")"'));
      const predict = () => ({ ...newIds('uuid'), model, data: input });
      const first = await runTask(world, env, predict());
      expectDone(first);
      const before = world.storage.requests.length;
      const second = await runTask(world, env, predict());
      expectDone(second);
      expect(stageNote(second)).toMatch(/^\d+ bytes \(cached: test\)$/);
      expect(blobGets([input], before)).toEqual({
        whole: [],
        headersOnly: [`/data/${input}/blob`],
      });
      const predictions = [first, second].map((o) =>
        world.storage.blob('prediction', o.report.predictionUuid as string)?.toString(),
      );
      expect(predictions).toEqual(['predicted\n', 'predicted\n']);

      // A task killed while it mounted the set: its lease names a process that is gone.
      const [entry] = await entries(dir);
      const lease = join(dir, 'leases', entry.volume, 'killed-run');
      await mkdir(lease, { recursive: true });
      const gone = Number((await execa('sh', ['-c', 'echo $$'])).stdout);
      const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
      await writeFile(join(lease, 'lock'), JSON.stringify({ pid: gone, start: '1', boot }));
      const tight = await cacheEnv(1024, dir);
      const other = data(padded('echo other > "/data/test/pred/$(basename "$0")"', 512));
      expectDone(await runTask(world, tight, { ...newIds('uuid'), model, data: other }));
      expect(await volumeExists(entry.volume)).toBe(false);
    });

    it('two tasks of two workers needing the same new set stage it once', async () => {
      const dir = (await cacheEnv()).dataCache?.dir as string;
      const train = [data(trainer('v1'))];
      const test = [data(scorer(0.25))];
      const before = world.storage.requests.length;
      const [one, two] = await Promise.all([
        runTask(world, await cacheEnv(1024 * MIB, dir), learn(train, test)),
        runTask(world, await cacheEnv(1024 * MIB, dir), learn(train, test)),
      ]);
      expectDone(one);
      expectDone(two);
      expect([...stagedData(one), ...stagedData(two)].sort()).toEqual([...train, ...test].sort());
      expect(blobGets([...train, ...test], before).whole.sort()).toEqual(
        [...train, ...test].map((u) => `/data/${u}/blob`).sort(),
      );
      expect(await entries(dir)).toHaveLength(2);
    });

    it('mounts the cached train set read-only and never the hidden test set into the submission', async () => {
      const env = await cacheEnv();
      const train = [data(trainer('v1'))];
      const test = [data(scorer(0.25, 0))];
      expectDone(await runTask(world, env, learn(train, test)));
      const second = await runTask(world, env, learn(train, test));
      expectDone(second);
      expect(stageNote(second)).toBe('0 bytes (cached: train, hiddenTest)');
      // What the train step saw, kept in the model it uploaded.
      const model = world.storage.blob('model', second.report.modelUuid as string) as Buffer;
      const seen = (await readTarGz(model)).find((e) => e.name.endsWith('seen.txt'));
      expect(seen?.content).toBe('train: read-only\nhidden: absent\n');
    });

    it('a staging killed half-way leaves an unfinished set that the next start removes', async () => {
      const env = await cacheEnv();
      const dir = env.dataCache?.dir as string;
      // 24 MiB at 64 KiB per 5 ms: about 2 s of staging to be killed in.
      const slow = data(padded('exit 0', 24 * MIB));
      const stager = execa(
        process.execPath,
        [
          fileURLToPath(new URL('../support/cache-stager.mjs', import.meta.url)),
          JSON.stringify({
            root: fileURLToPath(new URL('../../', import.meta.url)),
            storage: serviceOptions(world.storage),
            engine: podman.options,
            dataCache: env.dataCache,
            set: { uuids: [slow], dirs: ['pred'] },
            tmp: env.tmpDir,
          }),
        ],
        { reject: false },
      );
      let volume = '';
      await vi.waitFor(
        async () => {
          const [entry] = await entries(dir);
          volume = entry?.volume ?? '';
          expect(volume !== '' && (await volumeExists(volume))).toBe(true);
        },
        { timeout: 60_000, interval: 100 },
      );
      stager.kill('SIGKILL');
      expect((await stager).signal).toBe('SIGKILL');
      expect((await entries(dir)).map((e) => e.complete)).toEqual([false]);

      await sweepDataCache(env, log);
      expect(await volumeExists(volume)).toBe(false);
      expect(await entries(dir)).toEqual([]);
    });

    it("survives the task's cleanup and the worker's; a killed staging's leftovers go at the next start", async () => {
      const env = await cacheEnv();
      const dir = env.dataCache?.dir as string;
      const task = learn([data(trainer('v1'))], [data(scorer(0.25, 0))]);
      expectDone(await runTask(world, env, task));
      expect(await leftovers(task.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
      const cached = (await entries(dir)).map((e) => e.volume);
      expect(cached).toHaveLength(2);
      // A restart's cleanup of the worker's own, and doctor's view of the host.
      await env.engine.removeByLabels({ [LABEL_WORKER]: env.workerId });
      for (const volume of cached) expect(await volumeExists(volume)).toBe(true);
      const managed = (await env.engine.listManaged()).volumes.filter((v) =>
        cached.includes(v.name),
      );
      expect(managed.map((v) => v.worker)).toEqual([undefined, undefined]);

      // A staging killed half-way: its entry incomplete, its volume made, its lock's
      // process dead; and a volume whose entry never got written.
      const dead = await execa('sh', ['-c', 'echo $$']);
      const left = async (key: string, volume: string, holder: number) => {
        await writeFile(
          join(dir, 'entries', `${volume}.json`),
          JSON.stringify({
            key,
            volume,
            uuids: ['u'],
            owner: '1000:1000',
            dirs: [],
            blobs: [],
            bytes: 1,
            lastUsedMs: 1,
            complete: false,
          }),
        );
        await mkdir(join(dir, 'staging', key), { recursive: true });
        const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
        const start = holder === process.pid ? await startTime(holder) : '1';
        await writeFile(
          join(dir, 'staging', key, 'lock'),
          JSON.stringify({ pid: holder, start, boot }),
        );
        await execa(cli, [
          'volume',
          'create',
          '--label',
          `${LABEL_DATA_CACHE}=${key}`,
          ...Object.entries(cacheDirLabel(dir)).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
          '--label',
          'compute-worker.managed=true',
          volume,
        ]);
      };
      const killed = { key: 'a'.repeat(64), volume: `cw-data-${'a'.repeat(32)}` };
      const live = { key: 'b'.repeat(64), volume: `cw-data-${'b'.repeat(32)}` };
      await left(killed.key, killed.volume, Number(dead.stdout));
      await left(live.key, live.volume, process.pid);
      const orphan = `cw-data-${'c'.repeat(32)}`;
      await execa(cli, [
        'volume',
        'create',
        ...Object.entries(cacheDirLabel(dir)).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
        orphan,
      ]);

      await sweepDataCache(env, log);
      expect(await volumeExists(killed.volume)).toBe(false);
      expect(await volumeExists(orphan)).toBe(false);
      // Another worker (here: this live process) is still staging that one.
      expect(await volumeExists(live.volume)).toBe(true);
      const after = (await entries(dir)).map((e) => e.volume).sort();
      expect(after).toEqual([...cached, live.volume].sort());
      await rm(join(dir, 'staging', live.key), { recursive: true });
      await sweepDataCache(env, log);
      expect(await volumeExists(live.volume)).toBe(false);
      for (const volume of cached) expect(await volumeExists(volume)).toBe(true);
    });
  },
);
