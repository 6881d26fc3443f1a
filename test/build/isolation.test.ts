import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_TMP_BASE } from '../../src/build/confine.js';
import { baseStoreFor } from '../../src/build/store.js';
import { buildUserCli, findBuildUser } from '../../src/build/user.js';
import { createEngine } from '../../src/container-engine.js';
import { BUILD_MARK_ARG } from '../../src/engine/args.js';
import { type EngineCli, execEngine, execEngineRaw } from '../../src/engine/exec.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import {
  BUSYBOX_CONTAINERFILE,
  BUSYBOX_SKELETON,
  contextTarGz,
} from '../../src/engine/probe-context.js';
import type { Engine, EngineOptions } from '../../src/engine/types.js';
import { WorkerError } from '../../src/errors.js';
import { removeFromBaseStores } from '../support/base-stores.js';
import { buildCgroupsWhere, processesWith } from '../support/build-traces.js';
import { busyboxContext } from '../support/busybox-context.js';
import { readableOf } from '../support/engine-tar.js';
import {
  type EngineVariant,
  unavailableUnlessRequired,
  VARIANTS,
} from '../support/engine-variants.js';

const MIB = 1024 ** 2;
const BUILD_LIMITS = { memoryBytes: 128 * MIB, cpus: 1, pidsLimit: 64 };

/**
 * Untrusted builds, attacked from inside a RUN step: each case's RUN carries a marker of
 * its own in its command line, and afterwards no process with that marker, no working
 * container of a confined build and no temp folder of the build may be left.
 */
function defineBuildIsolation(variant: EngineVariant, cases: 'all' | 'spin'): void {
  describe(`untrusted builds: ${variant.id}`, { timeout: 300_000 }, () => {
    const labels = { [LABEL_WORKER]: `test-build-${randomBytes(4).toString('hex')}` };
    const previousTmp = process.env.TMPDIR;
    let tmp = '';
    let options: EngineOptions | undefined;
    let engine: Engine | undefined;

    beforeAll(async () => {
      if (unavailableUnlessRequired(variant)) return;
      // A private temp folder, so that a leftover of these builds is seen for certain.
      tmp = mkdtempSync(join(tmpdir(), 'cw-build-test-'));
      // The rootless wrapper makes its copy of the context here as the rootless user.
      chmodSync(tmp, 0o1777);
      process.env.TMPDIR = tmp;
      options = { ...variant.options, buildTimeoutMs: 120_000, buildLimits: BUILD_LIMITS };
      engine = await createEngine(options);
    });

    afterAll(() => {
      if (previousTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = previousTmp;
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    async function build(
      lines: string[],
      opts: {
        timeoutMs?: number;
        signal?: AbortSignal;
        userns?: string;
        files?: Record<string, string>;
        cpus?: number;
      } = {},
    ): Promise<{ error?: WorkerError; output: string[]; image?: string }> {
      if (!engine || !options) throw new Error('no engine');
      const output: string[] = [];
      // Other files build at the same time: what is left is looked for by this build's id.
      lastBuildId = randomBytes(8).toString('hex');
      const built =
        opts.timeoutMs || opts.userns || opts.cpus
          ? await createEngine({
              ...options,
              ...(opts.timeoutMs ? { buildTimeoutMs: opts.timeoutMs } : {}),
              ...(opts.cpus ? { buildLimits: { ...BUILD_LIMITS, cpus: opts.cpus } } : {}),
              ...(opts.userns ? { buildUserns: opts.userns } : {}),
            })
          : engine;
      try {
        const { image } = await built.buildImage({
          role: 'submission',
          // FROM scratch each time: a userns build FROM an image this host built fails at
          // runc's /run/.containerenv mount (buildah 1.28), see docs/builds.md.
          context: readableOf(await busyboxContext({ extraLines: lines, files: opts.files })),
          labels,
          signal: opts.signal,
          onOutputLine: (line) => output.push(line),
          buildId: lastBuildId,
        });
        return { output, image };
      } catch (error) {
        if (!(error instanceof WorkerError)) throw error;
        return { error, output };
      }
    }

    let lastBuildId = '';

    async function expectNothingLeft(marker: string): Promise<void> {
      expect(await processesWith(marker)).toEqual([]);
      const cli = { name: 'podman' as const, path: variant.options.enginePath ?? 'podman' };
      expect(await markedWorkingContainers(cli, lastBuildId)).toEqual([]);
      const user = variant.id === 'podman-rootful' ? await findBuildUser('auto') : undefined;
      if (user) {
        expect(await markedWorkingContainers(buildUserCli(cli, user), lastBuildId)).toEqual([]);
      }
      expect(readdirSync(tmp)).toEqual([]);
      expect(
        readdirSync(ENGINE_TMP_BASE).filter((name) =>
          name.startsWith(`cw-build-tmp-${lastBuildId}`),
        ),
      ).toEqual([]);
      expect(await buildCgroupsWhere((id) => id === lastBuildId)).toEqual([]);
    }

    it('runs RUN steps as root of a user namespace, with a reduced capability set', async (t) => {
      if (!engine || cases !== 'all') return t.skip();
      // A comment of its own: a context built before would be cached and print nothing.
      const { error, output } = await build([
        `RUN echo "uid_map: $(cat /proc/self/uid_map)"; grep -E "^Cap(Eff|Bnd)" /proc/self/status # ${randomBytes(6).toString('hex')}`,
      ]);
      expect(error, error?.detail).toBeUndefined();
      // The build's output, without buildah's warning about the worker's own mark.
      expect(output.some((line) => line.startsWith('COMMIT'))).toBe(true);
      expect(output.filter((line) => line.includes('not consumed'))).toEqual([]);
      const uidMap = output.find((line) => line.startsWith('uid_map:')) ?? '';
      const [inside, host, count] = uidMap.replace('uid_map:', '').trim().split(/\s+/).map(Number);
      expect(inside).toBe(0);
      // Not the identity map: the build's root is an unprivileged id of the host (the build
      // user's own, where there is one).
      expect(host).toBeGreaterThan(0);
      const user = await findBuildUser(options?.buildUser ?? 'auto');
      if (user) expect(host).toBe(user.uid);
      expect(count).toBeLessThan(2 ** 32 - 1);
      const caps = (name: string) =>
        BigInt(`0x${output.find((line) => line.startsWith(name))?.split(/\s+/)[1] ?? 'ffff'}`);
      // CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID: bits 0, 1, 3, 4, 5, 6, 7.
      expect(caps('CapBnd:')).toBe(0xfbn);
      expect(caps('CapEff:')).toBe(0xfbn);
      await expectNothingLeft('no-marker-here');
    });

    it('builds an image whose files belong to the ids the build gave them', async (t) => {
      if (!engine || cases !== 'all') return t.skip();
      const marker = randomBytes(6).toString('hex');
      const { error, image } = await build(
        ['COPY --chown=1000:1000 a.txt /owned', `RUN mkdir /app && echo ${marker} > /app/made`],
        { files: { 'a.txt': 'a\n' } },
      );
      expect(error, error?.detail).toBeUndefined();
      if (!image) throw new Error('no image');
      try {
        const result = await engine.run({
          image,
          command: [
            '/bin/busybox',
            'stat',
            '-c',
            '%u:%g %a %n',
            '/owned',
            '/app',
            '/app/made',
            '/tmp',
          ],
          mounts: [],
          labels,
          limits: { ...DEFAULT_LIMITS, memoryBytes: 128 * MIB },
          timeoutMs: 60_000,
          logTailLines: 50,
          logTailBytes: 16 * 1024,
        });
        expect(result.exitCode, result.logTail).toBe(0);
        expect(result.logTail.split('\n').filter(Boolean)).toEqual([
          '1000:1000 644 /owned',
          '0:0 755 /app',
          '0:0 644 /app/made',
          '0:0 1777 /tmp',
        ]);
        // The build user's store keeps no copy of the image: it was built in a store of
        // its own, removed after the move to the host's.
        const user = await findBuildUser(options?.buildUser ?? 'auto');
        if (user) {
          const cli = buildUserCli({ name: 'podman', path: '/usr/bin/podman' }, user);
          const left = await execEngineRaw(cli, ['image', 'exists', image], { timeoutMs: 60_000 });
          expect(left.exitCode).toBe(1);
        }
      } finally {
        await engine.removeByLabels(labels);
        await engine.removeImage(image);
      }
      await expectNothingLeft(marker);
    });

    it('gives the build user the base image the host has in the base store, and refuses it once the host has not', async (t) => {
      if (!engine || !options || cases !== 'all') return t.skip();
      const user = await findBuildUser(options.buildUser ?? 'auto');
      if (!user) return t.skip();
      const call = { timeoutMs: 60_000 };
      const base = await engine.buildImage({
        role: 'workflow',
        // A label first: no layer of the build cache (maybe one an id-mapped build left,
        // with files of ids like 2000000000) is taken.
        context: readableOf(
          await contextTarGz({
            Containerfile: `${['FROM scratch', `LABEL base=${randomBytes(6).toString('hex')}`, ...BUSYBOX_CONTAINERFILE.slice(1)].join('\n')}\n`,
            busybox: readFileSync('/bin/busybox'),
            ...BUSYBOX_SKELETON,
          }),
        ),
        labels,
      });
      const baseId = (
        await execEngine(engine.info, ['image', 'inspect', '--format', '{{.Id}}', base.image], call)
      ).trim();
      // A submission may not name the worker's own images: the base gets a name of its own.
      const name = `localhost/cw-userns-base-${randomBytes(4).toString('hex')}:1`;
      await execEngine(engine.info, ['tag', base.image, name], call);
      // Only that name: a base store takes no image under the worker's own names.
      await execEngine(engine.info, ['untag', base.image, base.image], call);
      const ctx = {
        cli: { name: 'podman' as const, path: '/usr/bin/podman' },
        info: engine.info,
        options,
      };
      const bases = await baseStoreFor(ctx, user);
      let built: string | undefined;
      try {
        const context = await contextTarGz({
          Containerfile: `FROM ${name}\nRUN echo from-base > /tmp/made\n`,
        });
        built = (
          await engine.buildImage({ role: 'submission', context: readableOf(context), labels })
        ).image;
        const inUser = await execEngineRaw(
          bases.owner.cli,
          ['image', 'inspect', '--format', '{{.Id}}', name],
          call,
        );
        expect(inUser.stdout.trim()).toBe(baseId);
      } finally {
        if (built) await engine.removeImage(built);
        await execEngineRaw(engine.info, ['rmi', name], call);
      }
      // The host no longer has it: the next build refuses it, and the user's copy is gone.
      const again = await engine
        .buildImage({
          role: 'submission',
          context: readableOf(await contextTarGz({ Containerfile: `FROM ${name}\nRUN true\n` })),
          labels,
        })
        .then(
          () => undefined,
          (error: WorkerError) => error,
        );
      expect(again?.code).toBe('BUILD_FAILED');
      expect(again?.message).toMatch(`FROM ${name}: there is no such image on this host`);
      await removeFromBaseStores(engine.info, options, [name]);
    });

    it('kills a spinning RUN at the build timeout and leaves nothing', async (t) => {
      if (!engine) return t.skip();
      // The timeout counts from the build's start. The steps before the RUN come from the
      // build cache and take seconds, but on a busy machine the shorter timeout may end
      // the build before its RUN starts: then the longer one is tried.
      for (const timeoutMs of [20_000, 60_000]) {
        const marker = `cwspin${randomBytes(6).toString('hex')}`;
        // Half a core for the whole build (the engine CLI too, with a build user): the
        // spinning stays within it, and leaves the other tests the rest.
        const building = build([`RUN while :; do :; done # ${marker}`], { timeoutMs, cpus: 0.5 });
        const spun = await sawProcess(marker, building);
        const { error } = await building;
        expect(error?.code, error?.detail).toBe('BUILD_FAILED');
        expect(error?.message).toMatch(`did not finish within ${timeoutMs} ms`);
        await expectNothingLeft(marker);
        if (spun) return;
      }
      expect.fail('the RUN step never started before the build timeout, even the longest');
    });

    it('kills a cancelled build whole', async (t) => {
      if (!engine || cases !== 'all') return t.skip();
      const marker = `cwcancel${randomBytes(6).toString('hex')}`;
      const controller = new AbortController();
      // `; true`: a shell would exec a lone last command, and the marker would go with it.
      const running = build([`RUN sleep 1000; true # ${marker}`], { signal: controller.signal });
      // Cancel once the RUN step runs (seen in the process table), not after a guessed delay.
      expect(await sawProcess(marker, running)).toBe(true);
      controller.abort();
      const { error } = await running;
      expect(error?.code).toBe('CANCELLED');
      await expectNothingLeft(marker);
    });

    it('gives a RUN that forks without end at most the pids limit', async (t) => {
      if (!engine || cases !== 'all') return t.skip();
      const marker = `cwfork${randomBytes(6).toString('hex')}`;
      const { error, output } = await build([
        `RUN n=0; while [ $n -lt 3000 ]; do sleep 600 & n=$((n+1)); [ $((n % 8)) -eq 0 ] && echo "forked $n"; done # ${marker}`,
      ]);
      expect(error?.code).toBe('BUILD_FAILED');
      const counts = output.flatMap((line) => /^forked (\d+)$/.exec(line)?.[1] ?? []).map(Number);
      expect(counts.length).toBeGreaterThan(0);
      expect(Math.max(...counts)).toBeLessThanOrEqual(BUILD_LIMITS.pidsLimit);
      await expectNothingLeft(marker);
    });

    it('fails a RUN that allocates memory without end as out of memory', async (t) => {
      if (!engine || cases !== 'all') return t.skip();
      const marker = `cwmem${randomBytes(6).toString('hex')}`;
      // A shell variable that doubles without end lives in the process's own memory.
      const { error } = await build([`RUN x=xxxxxxxx; while :; do x="$x$x"; done # ${marker}`]);
      expect(error?.code).toBe('BUILD_FAILED');
      expect(error?.retryable).toBe(false);
      expect(error?.message, error?.detail).toMatch(/ran out of memory \(limit 128m\)/);
      await expectNothingLeft(marker);
    });
  });
}

/** Waits until a process with the marker runs (true) or the build ends first (false). */
async function sawProcess(marker: string, build: Promise<unknown>): Promise<boolean> {
  let finished = false;
  void build.finally(() => {
    finished = true;
  });
  while (!finished) {
    if ((await processesWith(marker)).length > 0) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

/** Working containers of the confined build with this id (its mark). */
async function markedWorkingContainers(cli: EngineCli, buildId: string): Promise<string[]> {
  const call = { timeoutMs: 60_000 };
  const list = () => execEngine(cli, ['ps', '--all', '--external', '--quiet', '--no-trunc'], call);
  const ids = (await list().catch(list).catch(list)).split(/\s+/).filter(Boolean);
  const [root, driver] = (
    await execEngine(
      cli,
      ['info', '--format', '{{.Store.GraphRoot}}\t{{.Store.GraphDriverName}}'],
      call,
    )
  )
    .trim()
    .split('\t');
  return ids.filter((id) => {
    try {
      const file = join(root ?? '', `${driver}-containers`, id, 'userdata', 'buildah.json');
      return JSON.parse(readFileSync(file, 'utf8')).Args?.[BUILD_MARK_ARG] === buildId;
    } catch {
      return false;
    }
  });
}

defineBuildIsolation(VARIANTS['podman-rootful'], 'all');
defineBuildIsolation(VARIANTS['podman-rootless'], 'spin');
