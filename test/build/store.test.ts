import { randomBytes } from 'node:crypto';
import {
  chownSync,
  createReadStream,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { confineBuild, ENGINE_TMP_BASE } from '../../src/build/confine.js';
import { baseStoreFor } from '../../src/build/store.js';
import { findBuildUser } from '../../src/build/user.js';
import { createEngine } from '../../src/container-engine.js';
import { execEngine, execEngineRaw, execImageListing } from '../../src/engine/exec.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import { contextTarGz } from '../../src/engine/probe-context.js';
import type { Engine, EngineOptions } from '../../src/engine/types.js';
import { WorkerError } from '../../src/errors.js';
import { removeFromBaseStores } from '../support/base-stores.js';
import { readableOf } from '../support/engine-tar.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

/**
 * The policy refuses every image reference it does not know to be a base or a stage. To
 * show what the build's own store keeps out of reach whatever a check lets through, some
 * cases here switch the policy off.
 */
const policy = vi.hoisted(() => ({ off: false }));
vi.mock('../../src/build/policy.js', async (original) => {
  const real = await original<typeof import('../../src/build/policy.js')>();
  return {
    ...real,
    checkContainerfile: (...args: Parameters<typeof real.checkContainerfile>) =>
      policy.off ? undefined : real.checkContainerfile(...args),
  };
});

const variant = VARIANTS['podman-rootful'];
const rootless = VARIANTS['podman-rootless'];
const MIB = 1024 ** 2;
const call = { timeoutMs: 120_000 };
const podman = { name: 'podman' as const, path: '/usr/bin/podman' };
type Mode = 'cwbuild' | 'none' | 'rootless';
/** The host's podman of a mode: rootless podman has its own store, as the host's. */
const hostOf = (mode: Mode) =>
  mode === 'rootless'
    ? { name: 'podman' as const, path: rootless.options.enginePath as string }
    : podman;
const RUN = ['run', '--rm', '--runtime', 'runc', '--network=none'];
const ULIMITS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'];

/** A base image the operator put on the host: busybox, a file of uid 1000, and `extraMiB` of random bytes. */
async function importBase(name: string, extraMiB = 0, cli = podman): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-store-base-'));
  try {
    const root = join(dir, 'root');
    mkdirSync(join(root, 'bin'), { recursive: true });
    mkdirSync(join(root, 'home', 'u'), { recursive: true });
    mkdirSync(join(root, 'tmp'), { mode: 0o1777 });
    await copyFile('/bin/busybox', join(root, 'bin', 'busybox'));
    for (const tool of ['sh', 'cat', 'stat', 'dd', 'sleep', 'echo', 'chown', 'mkdir', 'true']) {
      symlinkSync('busybox', join(root, 'bin', tool));
    }
    await writeFile(join(root, 'home', 'u', 'f'), 'u\n');
    chownSync(join(root, 'home', 'u'), 1000, 1000);
    chownSync(join(root, 'home', 'u', 'f'), 1000, 1000);
    if (extraMiB > 0) await writeFile(join(root, 'blob'), randomBytes(extraMiB * MIB));
    await execa('tar', ['-C', root, '-cf', join(dir, 'base.tar'), '.']);
    // Through stdin: the rootless user cannot read this folder.
    const input = createReadStream(join(dir, 'base.tar'));
    const imported = await execEngineRaw(cli, ['import', '-', name], { ...call, input });
    if (imported.exitCode !== 0) throw new Error(imported.outputTail);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const imageId = async (image: string, cli = podman) =>
  (await execEngine(cli, ['image', 'inspect', '--format', '{{.Id}}', image], call)).trim();

describe.skipIf(unavailableUnlessRequired(variant))(
  'untrusted builds in a store of their own (rootful podman, and rootless where there is one)',
  { timeout: 600_000 },
  () => {
    const tag = randomBytes(4).toString('hex');
    const labels = { [LABEL_WORKER]: `test-build-store-${tag}` };
    const base = `localhost/cw-store-base-${tag}:1`;
    const bigBase = `localhost/cw-store-big-${tag}:1`;
    const previousTmp = process.env.TMPDIR;
    let tmp = '';
    let options: EngineOptions;
    const engines: Record<Mode, Engine | undefined> = {
      cwbuild: undefined,
      none: undefined,
      rootless: undefined,
    };
    const built = new Map<string, Mode>();
    const bigImported = new Set<string>();

    beforeAll(async () => {
      tmp = mkdtempSync(join(tmpdir(), 'cw-store-test-'));
      process.env.TMPDIR = tmp;
      // The worker's id starts every build's id, and so names the build's folder.
      options = {
        ...variant.options,
        buildTimeoutMs: 300_000,
        buildDiskLimitBytes: 50 * MIB,
        owner: `own-${tag}`,
      };
      await importBase(base);
      engines.none = await createEngine({ ...options, buildUser: 'none' });
      if (await findBuildUser('auto')) {
        engines.cwbuild = await createEngine({ ...options, buildUser: 'cwbuild' });
      }
      if (!rootless.unavailable()) {
        await importBase(base, 0, hostOf('rootless'));
        engines.rootless = await createEngine({ ...options, ...rootless.options });
      }
    });

    afterAll(async () => {
      policy.off = false;
      for (const [image, mode] of built) {
        await execEngineRaw(hostOf(mode), ['rmi', '--force', image], call);
      }
      if (engines.none) await removeFromBaseStores(engines.none.info, options, [base, bigBase]);
      const own = engines.rootless;
      if (own) {
        const ctx = { cli: hostOf('rootless'), info: own.info, options: rootless.options };
        const bases = await baseStoreFor(ctx);
        await execEngineRaw(bases.owner.cli, ['rmi', '--force', base, bigBase], call);
      }
      for (const mode of own ? (['none', 'rootless'] as const) : (['none'] as const)) {
        await execEngineRaw(hostOf(mode), ['rmi', base, bigBase], call);
      }
      if (previousTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = previousTmp;
      rmSync(tmp, { recursive: true, force: true });
    });

    async function build(
      engine: Engine,
      containerfile: string,
      buildId?: string,
    ): Promise<{ image?: string; error?: WorkerError }> {
      const mode: Mode = engine === engines.rootless ? 'rootless' : 'none';
      try {
        const result = await engine.buildImage({
          role: 'submission',
          context: readableOf(await contextTarGz({ Containerfile: containerfile })),
          labels,
          ...(buildId ? { buildId } : {}),
        });
        built.set(result.image, mode);
        return { image: result.image };
      } catch (error) {
        if (!(error instanceof WorkerError)) throw error;
        return { error };
      }
    }

    /** No folder of a build, no dangling image of these tests, in the host's store. */
    async function expectNothingLeft(cli = podman): Promise<void> {
      expect(readdirSync(tmp)).toEqual([]);
      const folders = readdirSync(ENGINE_TMP_BASE).filter((n) => n.startsWith('cw-build-tmp-'));
      const ours = folders.filter((n) => n.includes(tag));
      expect(ours).toEqual([]);
      // A sibling test's removal can race the listing: the worker's own retrying listing.
      const dangling = await execImageListing(
        cli,
        [
          'images',
          '-q',
          '--filter',
          'dangling=true',
          '--filter',
          `label=${LABEL_WORKER}=${labels[LABEL_WORKER]}`,
        ],
        call,
      );
      expect(dangling.trim()).toBe('');
    }

    for (const mode of ['cwbuild', 'none', 'rootless'] as const) {
      it(`${mode}: reaches no image of another participant, by name, tag or ID prefix`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        const secret = `secret-${randomBytes(6).toString('hex')}`;
        const other = await build(engine, `FROM ${base}\nRUN echo ${secret} > /secret\n`);
        expect(other.error).toBeUndefined();
        const otherImage = other.image as string;
        const otherTag = `localhost/cw-store-other-${tag}-${mode}:1`;
        const host = hostOf(mode);
        await execEngine(host, ['tag', otherImage, otherTag], call);
        built.set(otherTag, mode);
        const prefix = (await imageId(otherImage, host)).slice(0, 12);
        policy.off = true;
        try {
          for (const ref of [otherImage, otherTag, prefix]) {
            const copied = await build(
              engine,
              `FROM ${base}\nCOPY --from=${ref} /secret /got\nRUN cat /got\n`,
            );
            expect(copied.error?.code, `COPY --from=${ref}`).toBe('BUILD_FAILED');
            expect(copied.error?.detail ?? '').not.toContain(secret);
            const from = await build(engine, `FROM ${ref}\nRUN cat /secret\n`);
            expect(from.error?.code, `FROM ${ref}`).toMatch(/^BUILD_(FAILED|CONTEXT_REJECTED)$/);
            expect(from.error?.detail ?? '').not.toContain(secret);
          }
        } finally {
          policy.off = false;
        }
        await expectNothingLeft(host);
      });
    }

    for (const mode of ['cwbuild', 'rootless'] as const) {
      it(`${mode}: a killed build leaves nothing in reach, and the restart removes its store`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        const engineOptions = mode === 'rootless' ? { ...options, ...rootless.options } : options;
        const owner = `dead-${tag}`;
        const buildId = `${owner}.${randomBytes(8).toString('hex')}`;
        const secret = `secret-${randomBytes(6).toString('hex')}`;
        // What a SIGKILLed worker leaves: its build's folder and store, never released, and
        // in the store an image of its own (as a commit would leave it).
        const dead = { cli: hostOf(mode), info: engine.info, options: { ...engineOptions, owner } };
        const confinement = await confineBuild(dead, 'submission', buildId);
        const store = confinement?.store;
        if (!store) throw new Error('no store of its own');
        const folder = readdirSync(ENGINE_TMP_BASE).find((n) =>
          n.startsWith(`cw-build-tmp-${buildId}`),
        );
        const dir = join(
          ENGINE_TMP_BASE,
          folder ?? 'none',
          ...(mode === 'cwbuild' ? ['user'] : []),
        );
        const user =
          mode === 'cwbuild'
            ? await findBuildUser('cwbuild')
            : statSync(engine.info.graphRoot ?? '/');
        const leftImage = `localhost/compute-worker/submission:${randomBytes(32).toString('hex')}`;
        const secretDir = join(dir, 'secret');
        mkdirSync(secretDir);
        await writeFile(join(secretDir, 'secret'), `${secret}\n`);
        await execa('tar', ['-C', secretDir, '-cf', join(dir, 'secret.tar'), '.']);
        chownSync(join(dir, 'secret.tar'), user?.uid ?? 0, user?.gid ?? 0);
        const imported = await execEngineRaw(
          store.engine.cli,
          ['import', join(dir, 'secret.tar'), leftImage],
          call,
        );
        expect(imported.exitCode, imported.outputTail).toBe(0);
        const leftId = (
          await execEngine(
            store.engine.cli,
            ['image', 'inspect', '--format', '{{.Id}}', leftImage],
            call,
          )
        ).trim();
        policy.off = true;
        try {
          for (const ref of [leftImage, leftId.slice(0, 12)]) {
            const reached = await build(engine, `FROM ${base}\nCOPY --from=${ref} /secret /got\n`);
            expect(reached.error?.code, ref).toBe('BUILD_FAILED');
          }
        } finally {
          policy.off = false;
        }
        // The worker's restart removes the build's folder, its store with it.
        const restarted = await createEngine({ ...engineOptions, buildUser: 'cwbuild', owner });
        const left = await restarted.removeOrphanBuilds(owner);
        expect(left.folders).toEqual([join(ENGINE_TMP_BASE, folder ?? 'none')]);
        expect(readdirSync(ENGINE_TMP_BASE).filter((n) => n.includes(owner))).toEqual([]);
        await expectNothingLeft(hostOf(mode));
      });
    }

    for (const mode of ['cwbuild', 'none', 'rootless'] as const) {
      it(`${mode}: the image keeps its files' owners, and the base is copied once`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        const host = hostOf(mode);
        if (!bigImported.has(host.path)) await importBase(bigBase, 64, host);
        bigImported.add(host.path);
        const ctx = { cli: host, info: engine.info, options } as never;
        const user = mode === 'cwbuild' ? await findBuildUser('cwbuild') : undefined;
        const bases = await baseStoreFor(ctx, user);
        const made = (n: number) =>
          `FROM ${bigBase}\nRUN mkdir /owned && echo ${n} > /owned/x && chown 1234:1234 /owned && chown 1000:1000 /owned/x\n`;
        const first = await build(engine, made(1));
        expect(first.error).toBeUndefined();
        const storeBytes = await du(bases.spec.root);
        const second = await build(engine, made(2));
        expect(second.error).toBeUndefined();
        // The second submission adds nothing to the base store: the base is there already.
        expect(await du(bases.spec.root)).toBeLessThan(storeBytes + 8 * MIB);
        const owners = await execEngine(
          host,
          [
            ...RUN,
            ...ULIMITS,
            second.image as string,
            'stat',
            '-c',
            '%u:%g %n',
            '/owned',
            '/owned/x',
            '/home/u/f',
            '/bin/busybox',
          ],
          call,
        );
        expect(owners.trim().split('\n')).toEqual([
          '1234:1234 /owned',
          '1000:1000 /owned/x',
          '1000:1000 /home/u/f',
          '0:0 /bin/busybox',
        ]);
        await expectNothingLeft(host);
      });
    }

    it('two workers building the same new context at once both succeed, and no image is left without a name', async (t) => {
      const mode = engines.cwbuild ? 'cwbuild' : 'none';
      const make = () => createEngine({ ...options, buildUser: mode });
      const [a, b] = await Promise.all([make(), make()]);
      const containerfile = `FROM ${base}\nRUN echo ${randomBytes(8).toString('hex')} > /made\n`;
      const results = await Promise.all([build(a, containerfile), build(b, containerfile)]);
      expect(results.map((r) => r.error)).toEqual([undefined, undefined]);
      expect(results[0]?.image).toBe(results[1]?.image);
      if (!results[0]?.image) return t.skip();
      await expectNothingLeft();
    });

    it('a base name the host gives to another image builds on that one, never on the copy kept of the old', async () => {
      const engine = engines.cwbuild ?? engines.none;
      if (!engine) throw new Error('no engine');
      const short = `cw-store-shadow-${tag}:1`;
      const old = `localhost/${short}`;
      const renamed = `quay.io/cw-test/${short}`;
      const firstLayer = async (image: string) =>
        (
          await execEngine(
            podman,
            ['image', 'inspect', '--format', '{{index .RootFS.Layers 0}}', image],
            call,
          )
        ).trim();
      await importBase(old, 1);
      const before = await build(engine, `FROM ${short}\nRUN echo ${tag}-old\n`);
      expect(before.error).toBeUndefined();
      expect(await firstLayer(before.image as string)).toBe(await firstLayer(old));
      // The operator replaces the image behind the name.
      await execEngine(podman, ['rmi', old], call);
      await importBase(renamed, 1);
      try {
        const after = await build(engine, `FROM ${short}\nRUN echo ${tag}-new\n`);
        expect(after.error).toBeUndefined();
        expect(await firstLayer(after.image as string)).toBe(await firstLayer(renamed));
      } finally {
        await removeFromBaseStores(engine.info, options, [old, renamed]);
        await execEngineRaw(podman, ['rmi', renamed], call);
      }
      await expectNothingLeft();
    });

    it('cwbuild: failed builds leave no pause process of the build user behind', async (t) => {
      const engine = engines.cwbuild;
      const user = await findBuildUser('cwbuild');
      if (!engine || !user) return t.skip();
      const before = new Set(await idlePauses(user.uid));
      for (const n of [1, 2]) {
        const failed = await build(engine, `FROM ${base}\nRUN echo ${tag}-${n} && exit 3\n`);
        expect(failed.error?.code).toBe('BUILD_FAILED');
      }
      // Each failed build's clean-up made one or two, alive for as long as the host ran.
      // A sibling test's build may hold one for a moment between its calls: a leak stays.
      const newIdle = async () => (await idlePauses(user.uid)).filter((pid) => !before.has(pid));
      const deadline = Date.now() + 15_000;
      let left = await newIdle();
      while (left.length > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        left = await newIdle();
      }
      expect(left).toEqual([]);
      await expectNothingLeft();
    });

    for (const mode of ['cwbuild', 'none', 'rootless'] as const) {
      it(`${mode}: what buildah writes in its temp folder during a RUN counts against --disk-limit`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        const result = await build(
          engine,
          `FROM ${base}\nRUN dd if=/dev/zero of=/etc/hostname bs=1M count=80 && dd if=/dev/zero of=/run/.containerenv bs=1M count=20 && sleep 30\n`,
        );
        expect(result.error?.code, result.error?.message).toBe('DISK_LIMIT');
        await expectNothingLeft(hostOf(mode));
      });

      it(`${mode}: a stage FROM an earlier stage counts that one's commit against --disk-limit too`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        // 20 MiB in each working container, and 20 more in the commit of the first, which
        // the second stands on: 60 MiB on disk for a limit of 50.
        const result = await build(
          engine,
          `FROM ${base} AS one\nRUN dd if=/dev/zero of=/one bs=1M count=20 && echo ${mode}\nFROM one\nRUN dd if=/dev/zero of=/two bs=1M count=20 && sleep 20\n`,
        );
        expect(result.error?.code, result.error?.message).toBe('DISK_LIMIT');
        await expectNothingLeft(hostOf(mode));
      });

      it(`${mode}: counts a base file replaced by a new one, whatever the storage driver`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        // A base with a 40 MiB file, replaced by one of 60 MiB: the layer adds 60 MiB
        // (vfs, rootless here, copies the whole base into each layer).
        const name = `localhost/cw-store-blob-${tag}-${mode}:1`;
        await importBase(name, 40, hostOf(mode));
        try {
          const result = await build(
            engine,
            `FROM ${name}\nRUN dd if=/dev/zero of=/blob.new bs=1M count=60 && rm /blob && mv /blob.new /blob && sleep 3\n`,
          );
          expect(result.error?.code, result.error?.message).toBe('DISK_LIMIT');
        } finally {
          await execEngineRaw(hostOf(mode), ['rmi', '--force', name], call);
          if (mode === 'rootless') {
            const own = engines.rootless as Engine;
            const ctx = { cli: hostOf(mode), info: own.info, options: rootless.options };
            await execEngineRaw(
              (await baseStoreFor(ctx)).owner.cli,
              ['rmi', '--force', name],
              call,
            );
          } else {
            await removeFromBaseStores((engines.none as Engine).info, options, [name]);
          }
        }
        await expectNothingLeft(hostOf(mode));
      });

      it(`${mode}: counts every file of a layer as an inode against --disk-limit, empty or not`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        // 4,000 empty files take almost no blocks, but 4,000 of the host's inodes.
        const result = await build(
          engine,
          `FROM ${base}\nRUN mkdir /many && cd /many && busybox seq 1 4000 | busybox xargs busybox touch && echo ${mode}\n`,
        );
        expect(result.error?.code, result.error?.message).toBe('DISK_LIMIT');
        await expectNothingLeft(hostOf(mode));
      });

      it(`${mode}: refuses a base image that declares a VOLUME before any RUN writes into it`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        const name = `localhost/cw-store-vol-${tag}-${mode}:1`;
        // An operator's image with a VOLUME: an empty root filesystem (1024 zero bytes of tar).
        const input = Readable.from([Buffer.alloc(1024)]);
        const made = await execEngineRaw(
          hostOf(mode),
          ['import', '--change', 'VOLUME /data', '-', name],
          { ...call, input },
        );
        expect(made.exitCode, made.outputTail).toBe(0);
        try {
          const started = Date.now();
          const result = await build(
            engine,
            `FROM ${name}\nRUN dd if=/dev/zero of=/data/fill bs=1M count=200 && sleep 30\n`,
          );
          expect(result.error?.code, result.error?.message).toBe('BUILD_CONTEXT_REJECTED');
          expect(result.error?.message).toMatch(/declares VOLUME \/data/);
          expect(Date.now() - started).toBeLessThan(20_000);
        } finally {
          await execEngineRaw(hostOf(mode), ['rmi', '--force', name], call);
        }
        await expectNothingLeft(hostOf(mode));
      });

      it(`${mode}: a missing COPY source named like an engine file is the context's fault, and no worker folder is named`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        for (const source of ['docker.sock', 'subuid', '["no space left on device", "/y"]']) {
          const copy = source.startsWith('[') ? `COPY ${source}` : `COPY ${source} /x`;
          const result = await build(engine, `FROM ${base}\n${copy}\n`);
          expect(result.error?.code, result.error?.message).toBe('BUILD_FAILED');
          expect(result.error?.retryable).toBe(false);
          // (The rootless test wrapper hands podman a copy of the context under /tmp.)
          if (mode !== 'rootless') expect(result.error?.detail).toContain('<context>');
          expect(result.error?.detail).not.toMatch(
            /\/var\/tmp\/cw-|compute-worker-|cw-store-test-/,
          );
        }
        await expectNothingLeft(hostOf(mode));
      });

      it(`${mode}: builds stages within --disk-limit, the final commit not counted twice`, async (t) => {
        const engine = engines[mode];
        if (!engine) return t.skip();
        // 8 + 8 + 30 MiB while it runs; the final commit copies the last 30 once more.
        const result = await build(
          engine,
          `FROM ${base} AS one\nRUN dd if=/dev/zero of=/one bs=1M count=8 && sleep 2 && echo ${mode}\nFROM one\nRUN dd if=/dev/zero of=/two bs=1M count=30 && sleep 3\n`,
        );
        expect(result.error?.message).toBeUndefined();
        const sizes = await execEngine(
          hostOf(mode),
          [...RUN, ...ULIMITS, result.image as string, 'stat', '-c', '%s', '/one', '/two'],
          call,
        );
        expect(sizes.trim().split('\n').map(Number)).toEqual([8 * MIB, 30 * MIB]);
        await expectNothingLeft(hostOf(mode));
      });
    }
  },
);

async function du(path: string): Promise<number> {
  const { stdout } = await execa('du', ['-s', '--block-size=1', path]);
  return Number(stdout.split('\t')[0]);
}

/**
 * Live `catatonit -P` processes of the user that are alone in their user namespace and not
 * the one podman records: pause processes nothing will use or end.
 */
async function idlePauses(uid: number): Promise<number[]> {
  const recorded = ['/run/user', '/tmp/podman-run-'].map((dir) => {
    try {
      const base = dir === '/run/user' ? `${dir}/${uid}` : `${dir}${uid}`;
      return Number(readFileSync(`${base}/libpod/tmp/pause.pid`, 'utf8'));
    } catch {
      return -1;
    }
  });
  const nsOf = (pid: string) => {
    try {
      return readlinkSync(`/proc/${pid}/ns/user`);
    } catch {
      return '';
    }
  };
  const pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  const population = new Map<string, number>();
  for (const pid of pids) population.set(nsOf(pid), (population.get(nsOf(pid)) ?? 0) + 1);
  return pids
    .filter((pid) => {
      try {
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return (
          cmdline[0]?.endsWith('catatonit') &&
          cmdline[1] === '-P' &&
          !/^State:\s+Z/m.test(status) &&
          new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(status) &&
          population.get(nsOf(pid)) === 1
        );
      } catch {
        return false;
      }
    })
    .map(Number)
    .filter((pid) => !recorded.includes(pid));
}
