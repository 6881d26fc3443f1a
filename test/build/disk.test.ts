import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILD_CGROUP_ROOT } from '../../src/build/cgroup.js';
import { createEngine } from '../../src/container-engine.js';
import { BUILD_MARK_ARG, imageSizeArgs } from '../../src/engine/args.js';
import { execEngine, execEngineRaw } from '../../src/engine/exec.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import type { Engine, EngineOptions } from '../../src/engine/types.js';
import { WorkerError } from '../../src/errors.js';
import { buildCgroupsWhere, processesWith } from '../support/build-traces.js';
import { busyboxContext } from '../support/busybox-context.js';
import { readableOf } from '../support/engine-tar.js';
import {
  type EngineVariant,
  unavailableUnlessRequired,
  VARIANTS,
} from '../support/engine-variants.js';

const MIB = 1024 ** 2;
const LIMIT = 50 * MIB;

/**
 * --disk-limit bounds what a submission's build writes into its layers: measured while it
 * runs (a RUN step that writes past it is killed within seconds, well before the build
 * timeout) and the image it makes (a COPY of a large context file).
 */
function defineBuildDisk(variant: EngineVariant): void {
  describe(`build disk limit: ${variant.id}`, { timeout: 300_000 }, () => {
    const labels = { [LABEL_WORKER]: `test-build-disk-${randomBytes(4).toString('hex')}` };
    const previousTmp = process.env.TMPDIR;
    let tmp = '';
    let options: EngineOptions | undefined;
    let engine: Engine | undefined;
    const cli = () => ({ name: 'podman' as const, path: variant.options.enginePath ?? 'podman' });

    beforeAll(async () => {
      if (unavailableUnlessRequired(variant)) return;
      tmp = mkdtempSync(join(tmpdir(), 'cw-build-disk-test-'));
      chmodSync(tmp, 0o1777); // the rootless wrapper copies the context here as its user
      process.env.TMPDIR = tmp;
      options = {
        ...variant.options,
        buildTimeoutMs: 280_000,
        buildLimits: { memoryBytes: 256 * MIB, cpus: 1, pidsLimit: 64 },
        buildDiskLimitBytes: LIMIT,
      };
      engine = await createEngine(options);
    });

    afterAll(() => {
      if (previousTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = previousTmp;
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    /** Builds the context; while it runs, reads its mark from the `podman build` command line. */
    async function build(
      context: Buffer,
    ): Promise<{ error?: WorkerError; image: string; mark?: string; cgroup?: string }> {
      if (!engine) throw new Error('no engine');
      const digest = createHash('sha256').update(context).digest('hex');
      const image = `localhost/compute-worker/submission:${digest}`;
      let seen: { mark: string; cgroup?: string } | undefined;
      let done = false;
      const building = engine
        .buildImage({ role: 'submission', context: readableOf(context), labels })
        .then(() => undefined)
        .catch((error: unknown) => {
          if (error instanceof WorkerError) return error;
          throw error;
        })
        .finally(() => {
          done = true;
        });
      while (!done && !seen) {
        seen = await buildMark(image);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return { error: await building, image, ...seen };
    }

    async function imageExists(image: string): Promise<boolean> {
      const result = await execEngineRaw(cli(), ['image', 'exists', image], { timeoutMs: 60_000 });
      return result.exitCode === 0;
    }

    it('stops a RUN that writes a layer past the limit within seconds and leaves nothing', async (t) => {
      if (!engine) return t.skip();
      const marker = `cwdisk${randomBytes(6).toString('hex')}`;
      const started = Date.now();
      // `; true`: the shell stays, and with it the marker in a command line.
      const { error, image, mark, cgroup } = await build(
        await busyboxContext({
          extraLines: [
            `RUN dd if=/dev/zero of=/tmp/big bs=1M count=300 && sleep 600; true # ${marker}`,
          ],
        }),
      );
      expect(error?.code, error?.detail).toBe('DISK_LIMIT');
      expect(error?.retryable).toBe(false);
      expect(error?.message).toMatch(
        /^The submission's build wrote \d+\.\d MiB \(\d+ bytes\) into its layers, past the --disk-limit of 50m: it was stopped$/,
      );
      // Far from the 280 s build timeout and the RUN's 600 s sleep.
      expect(Date.now() - started).toBeLessThan(120_000);
      expect(mark).toBeDefined();
      expect(await processesWith(marker)).toEqual([]);
      expect(await workingContainersOf(variant, mark as string)).toEqual([]);
      expect(await imageExists(image)).toBe(false);
      // The rootful worker puts the build into a cgroup of its own.
      if (variant.id === 'podman-rootful') expect(cgroup).toBeDefined();
      if (cgroup) expect(await buildCgroupsWhere((id) => id === cgroup)).toEqual([]);
    });

    it('stops a RUN step that holds a sparse file of 2 GiB: a commit would write it whole', async (t) => {
      if (!engine) return t.skip();
      // It takes 4 KiB; committed, it would be 2 GiB on the host's disk.
      const { error, image, mark } = await build(
        await busyboxContext({
          extraLines: [
            `RUN dd if=/dev/zero of=/tmp/sparse bs=1 count=1 seek=2147483647 && sleep 6 # ${randomBytes(6).toString('hex')}`,
          ],
        }),
      );
      expect(error?.code, error?.detail).toBe('DISK_LIMIT');
      expect(error?.message).toMatch(/wrote 2\.0 GiB \(\d+ bytes\) into its layers/);
      expect(await imageExists(image)).toBe(false);
      expect(await workingContainersOf(variant, mark as string)).toEqual([]);
    });

    it.for([
      [
        'fills a tmpfs of its own',
        'RUN --mount=type=tmpfs,target=/t,tmpfs-size=1m dd if=/dev/zero of=/t/x bs=1M count=2',
      ],
      [
        'prints the words of a full disk',
        'RUN echo "write /x: no space left on device (docker.sock, subuid)"; exit 1',
      ],
    ] as const)(
      "a RUN step that %s is the context's fault, not the host's",
      async ([, line], t) => {
        if (!engine) return t.skip();
        const { error } = await build(
          await busyboxContext({ extraLines: [`${line} # ${randomBytes(6).toString('hex')}`] }),
        );
        expect(error?.code, error?.detail).toBe('BUILD_FAILED');
        expect(error?.retryable).toBe(false);
        expect(error?.hint ?? '').not.toMatch(/storage is full|docker daemon|subuid/);
      },
    );

    it('refuses an image with a sparse file of 64 MiB: the commit writes it out in full', async (t) => {
      if (!engine) return t.skip();
      const { error, image } = await build(
        await busyboxContext({
          extraLines: [`RUN truncate -s 64M /tmp/sparse # ${randomBytes(6).toString('hex')}`],
        }),
      );
      expect(error?.code, error?.detail).toBe('DISK_LIMIT');
      // Seen while it is committed, or in the image the commit made; each of the busybox
      // layer's few hundred entries counts an inode (16 KiB) besides.
      expect(error?.message).toMatch(
        /^The submission's (build wrote|built image holds) (6[4-9]|7\d)\.\d MiB \(\d+ bytes\)( into its layers)?, past the --disk-limit of 50m: it was (stopped|removed)$/,
      );
      expect(await imageExists(image)).toBe(false);
    });

    it('removes and refuses an image that a COPY of a large file puts past the limit', async (t) => {
      if (!engine) return t.skip();
      const big = Buffer.concat([randomBytes(1024), Buffer.alloc(60 * 1000 * 1000)]);
      const { error, image } = await build(
        await busyboxContext({ files: { big }, extraLines: ['COPY big /tmp/big'] }),
      );
      expect(error?.code, error?.detail).toBe('DISK_LIMIT');
      expect(error?.message).toMatch(/past the --disk-limit of 50m/);
      expect(await imageExists(image)).toBe(false);
    });

    it('gives the built image size in bytes', async (t) => {
      if (!engine) return t.skip();
      const { error, image } = await build(
        await busyboxContext({ extraLines: [`RUN echo ${randomBytes(6).toString('hex')}`] }),
      );
      expect(error, error?.detail).toBeUndefined();
      const size = Number(await execEngine(cli(), imageSizeArgs(image), { timeoutMs: 60_000 }));
      // busybox alone is about 2 MB.
      expect(size).toBeGreaterThan(MIB);
      expect(size).toBeLessThan(LIMIT);
      await execEngineRaw(cli(), ['rmi', '--force', image], { timeoutMs: 60_000 });
    });
  });
}

/** The mark and cgroup of the running `podman build` that tags this image, from /proc. */
async function buildMark(image: string): Promise<{ mark: string; cgroup?: string } | undefined> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const args = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (!args.includes(image)) continue;
    const arg = args.find((a) => a.startsWith(`${BUILD_MARK_ARG}=`));
    if (!arg) continue;
    const cgroups = await readFile(`/proc/${entry}/cgroup`, 'utf8').catch(() => '');
    const cgroup = new RegExp(`/${BUILD_CGROUP_ROOT}/([0-9a-f]+)/`).exec(cgroups)?.[1];
    return { mark: arg.slice(BUILD_MARK_ARG.length + 1), cgroup };
  }
  return undefined;
}

/** Working containers (`ps --external`) made with this build's mark. */
async function workingContainersOf(variant: EngineVariant, mark: string): Promise<string[]> {
  const cli = { name: 'podman' as const, path: variant.options.enginePath ?? 'podman' };
  const call = { timeoutMs: 60_000 };
  // A working container of another build going away while listed makes `ps` fail: again.
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
  const ours: string[] = [];
  for (const id of ids) {
    const file = join(root ?? '', `${driver}-containers`, id, 'userdata', 'buildah.json');
    const text = await readFile(file, 'utf8').catch(() => '');
    try {
      if (JSON.parse(text).Args?.[BUILD_MARK_ARG] === mark) ours.push(id);
    } catch {
      // not a working container
    }
  }
  return ours;
}

defineBuildDisk(VARIANTS['podman-rootful']);
defineBuildDisk(VARIANTS['podman-rootless']);
