import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { createArgs } from '../../src/engine/args.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { Engine, RunSpec } from '../../src/engine/types.js';
import { LOCAL_VARIANTS, unavailableUnlessRequired } from '../support/engine-variants.js';

// An image that declares `VOLUME /scratch`: without care, the engine backs it with an
// anonymous host volume that carries none of the worker's labels and outlives the task.
// The image is built with the engine directly (no Containerfile policy in the way), its
// /scratch writable by the containers' user, and each test looks for the file the container
// wrote in every volume on the host, so other users' volumes coming and going do not matter.

const MIB = 1024 ** 2;

describe.each(LOCAL_VARIANTS)('an image VOLUME on $id', { timeout: 300_000 }, (variant) => {
  const labels = { [LABEL_WORKER]: `test-image-volume-${randomBytes(4).toString('hex')}` };
  const image = `localhost/cw-test-image-volume:${randomBytes(6).toString('hex')}`;
  const cli = variant.options.enginePath as string;
  let engine: Engine | undefined;
  let dir = '';

  beforeAll(async () => {
    if (unavailableUnlessRequired(variant)) return;
    engine = await createEngine(variant.options);
    dir = await mkdtemp(join(tmpdir(), 'cw-image-volume-'));
    await copyFile('/bin/busybox', join(dir, 'busybox'));
    await writeFile(
      join(dir, 'Dockerfile'),
      [
        'FROM scratch',
        'COPY busybox /bin/busybox',
        'RUN ["/bin/busybox", "mkdir", "-p", "-m", "777", "/scratch"]',
        'VOLUME /scratch',
        '',
      ].join('\n'),
    );
    const runtime = variant.options.ociRuntime ? ['--runtime', variant.options.ociRuntime] : [];
    await execa(cli, ['build', ...runtime, '--network', 'none', '--tag', image, dir]);
  });

  afterAll(async () => {
    if (!engine) return;
    await engine.removeByLabels(labels);
    await execa(cli, ['rmi', '--force', image], { reject: false });
    await rm(dir, { recursive: true, force: true });
  });

  const ready = (ctx: TestContext): Engine => {
    if (!engine) ctx.skip();
    return engine as Engine;
  };

  /** 20 MiB into the VOLUME, then how /scratch is mounted. */
  const spec = (marker: string): RunSpec => ({
    image,
    command: [
      '/bin/busybox',
      'sh',
      '-c',
      `/bin/busybox dd if=/dev/zero of=/scratch/${marker} bs=1M count=20 && /bin/busybox grep " /scratch " /proc/mounts`,
    ],
    mounts: [],
    labels,
    limits: { ...DEFAULT_LIMITS, memoryBytes: 256 * MIB },
    timeoutMs: 60_000,
    logTailLines: 50,
    logTailBytes: 16 * 1024,
  });

  /** The host volumes (of anyone) that hold the file named `marker` at their root. */
  async function volumesHolding(marker: string): Promise<string[]> {
    // podman 4.3 fails the whole listing when another test removes a volume meanwhile.
    let listed = await execa(cli, ['volume', 'ls', '--format', '{{.Name}} {{.Mountpoint}}'], {
      reject: false,
    });
    for (let i = 0; i < 5 && listed.exitCode !== 0; i++) {
      listed = await execa(cli, ['volume', 'ls', '--format', '{{.Name}} {{.Mountpoint}}'], {
        reject: false,
      });
    }
    if (listed.exitCode !== 0) throw new Error(`volume ls failed: ${listed.stderr}`);
    return listed.stdout
      .split('\n')
      .map((line) => line.trim().split(' '))
      .filter(([name, mountpoint]) => name && mountpoint && existsSync(join(mountpoint, marker)))
      .map(([name]) => name as string);
  }

  it('goes with the container: no host volume keeps what it wrote', async (ctx) => {
    const e = ready(ctx);
    const marker = `marker-${randomBytes(6).toString('hex')}`;
    const result = await e.run(spec(marker));
    expect(result.exitCode, result.logTail).toBe(0);
    if (variant.id !== 'docker') {
      // podman backs it with a tmpfs (charged to the container's memory), not a host volume.
      expect(result.logTail).toMatch(/^tmpfs \/scratch tmpfs /m);
    }
    expect(await volumesHolding(marker)).toEqual([]);
  });

  it("leaks without the worker's flags (so the check above can fail)", async (ctx) => {
    const e = ready(ctx);
    const marker = `marker-${randomBytes(6).toString('hex')}`;
    const name = `cw-test-leak-${randomBytes(6).toString('hex')}`;
    const args = createArgs(e.info, name, spec(marker)).filter(
      (arg) => arg !== '--image-volume=tmpfs',
    );
    try {
      await execa(cli, args);
      await execa(cli, ['start', name]);
      expect((await execa(cli, ['wait', name])).stdout.trim()).toBe('0');
    } finally {
      await execa(cli, ['rm', '--force', name], { reject: false });
    }
    const leaked = await volumesHolding(marker);
    await execa(cli, ['volume', 'rm', '--force', ...leaked], { reject: false });
    expect(leaked).toHaveLength(1);
  });
});
