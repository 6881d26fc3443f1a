import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, engineFor } from '../../src/container-engine.js';
import { execEngine, execEngineRaw } from '../../src/engine/exec.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import { BUSYBOX_SKELETON, contextTarGz } from '../../src/engine/probe-context.js';
import type { Engine } from '../../src/engine/types.js';
import { removeFromBaseStores } from '../support/base-stores.js';
import { readableOf } from '../support/engine-tar.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';
import { type StandIn, startStandIn } from '../support/http-stand-in.js';

const variant = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(variant);

const corpus = (name: string) =>
  readFile(join(import.meta.dirname, 'containerfile-corpus', `${name}.Containerfile`), 'utf8');

/**
 * The escapes of the corpus that a build would show (a host file read, a fetch from the
 * host's loopback, a cache mount) never reach the builder: the build is refused first.
 */
describe.skipIf(why)('Containerfile policy, with real builds (rootful podman)', () => {
  let engine: Engine;
  let server: StandIn;
  let busybox: Buffer;
  const labels = { [LABEL_WORKER]: `policy-${randomBytes(4).toString('hex')}` };
  const images: string[] = [];

  beforeAll(async () => {
    engine = await createEngine(variant.options);
    server = await startStandIn('policy', {}, async (_req, res) => {
      res.end('fetched');
    });
    busybox = await readFile('/bin/busybox');
  });

  afterAll(async () => {
    await engine?.removeByLabels(labels);
    for (const image of images) {
      await execEngineRaw(engine.info, ['rmi', '--force', image], { timeoutMs: 60_000 });
    }
    await server?.close();
  });

  const contextOf = (containerfile: string) =>
    contextTarGz({ Containerfile: containerfile, busybox, 'a.txt': 'a\n', ...BUSYBOX_SKELETON });

  async function expectRefused(role: string, containerfile: string, line: number, e = engine) {
    const context = await contextOf(containerfile);
    const digest = createHash('sha256').update(context).digest('hex');
    const error = await e
      .buildImage({ role, context: readableOf(context), labels })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BUILD_CONTEXT_REJECTED', retryable: false });
    expect((error as Error).message).toContain(`line ${line}: `);
    const exists = await execEngineRaw(
      engine.info,
      ['image', 'exists', `localhost/compute-worker/${role}:${digest}`],
      { timeoutMs: 60_000 },
    );
    expect(exists.exitCode).toBe(1);
  }

  it('refuses the bind mount of a link to / (CVE-2024-1753) in a submission', async () => {
    await expectRefused('submission', await corpus('cve-2024-1753-bind-mount'), 6);
  });

  it.each(['submission', 'workflow'])(
    'refuses ADD of a URL on the host loopback behind the :+ operator in a %s: nothing is fetched',
    async (role) => {
      const file = (await corpus('add-url-plus-operator')).replace(
        'http://127.0.0.1:9/path',
        `${server.url}/add-${role}`,
      );
      expect(file).toContain(server.url);
      await expectRefused(role, file, 3);
      expect(server.requests).toEqual([]);
    },
  );

  it.each(['submission', 'workflow'])(
    'refuses a cache mount behind the :+ operator in a %s',
    async (role) => {
      await expectRefused(role, await corpus('cache-mount-plus-operator'), 3);
    },
  );

  it('checks the workflow like a submission under --workflow-build-policy strict, even when built before', async () => {
    const containerfile = `FROM scratch\nADD a.txt /a.txt\nLABEL n=${randomBytes(4).toString('hex')}\n`;
    const trusted = await engine.buildImage({
      role: 'workflow',
      context: readableOf(await contextOf(containerfile)),
      labels,
    });
    images.push(trusted.image);
    const strict = engineFor(engine.info, { ...variant.options, workflowBuildPolicy: 'strict' });
    const error = await strict
      .buildImage({ role: 'workflow', context: readableOf(await contextOf(containerfile)), labels })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BUILD_CONTEXT_REJECTED', retryable: false });
    expect((error as Error).message).toContain('line 2: ADD is not allowed');
  });

  it('refuses VOLUME in a submission', async () => {
    await expectRefused('submission', await corpus('volume'), 2);
  });

  it('refuses a submission whose base image declares a VOLUME, and removes what it built', async () => {
    const base = await engine.buildImage({
      role: 'workflow',
      context: readableOf(
        await contextOf(
          `FROM scratch\nCOPY busybox /bin/busybox\nVOLUME /data\nLABEL n=${randomBytes(4).toString('hex')}\n`,
        ),
      ),
      labels,
    });
    images.push(base.image);
    const alias = `localhost/cw-policy-base-${randomBytes(4).toString('hex')}:1`;
    // Only the alias: a base store takes no image under the worker's own names.
    await execEngine(engine.info, ['tag', base.image, alias], { timeoutMs: 60_000 });
    await execEngine(engine.info, ['untag', base.image, base.image], { timeoutMs: 60_000 });
    images.push(alias);
    const context = await contextOf(`FROM ${alias}\nUSER 1000\n`);
    const digest = createHash('sha256').update(context).digest('hex');
    const error = await engine
      .buildImage({ role: 'submission', context: readableOf(context), labels })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BUILD_CONTEXT_REJECTED', retryable: false });
    expect((error as Error).message).toContain('VOLUME /data');
    const exists = await execEngineRaw(
      engine.info,
      ['image', 'exists', `localhost/compute-worker/submission:${digest}`],
      { timeoutMs: 60_000 },
    );
    expect(exists.exitCode).toBe(1);
    await removeFromBaseStores(engine.info, variant.options, [alias]);
  });

  it('builds an allowed multi-stage submission with a tmpfs mount', async () => {
    const marker = randomBytes(6).toString('hex');
    const containerfile = [
      'FROM scratch AS tools',
      // The folders runc needs, and /tmp: a confined RUN cannot create them in `/`.
      'COPY skeleton/ /',
      'COPY busybox /bin/busybox',
      'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
      `RUN --mount=type=tmpfs,target=/tmp/scratch,tmpfs-size=8m grep -q " /tmp/scratch tmpfs " /proc/mounts && echo ${marker} > /tmp/scratch/f && cp /tmp/scratch/f /tmp/made`,
      'RUN test ! -e /tmp/scratch/f',
      'FROM scratch',
      'COPY --from=tools /bin/busybox /bin/busybox',
      'COPY --from=0 --chown=1000:1000 /tmp/made /made',
      'COPY a.txt /a.txt',
      'USER 1000:1000',
      '',
    ].join('\n');
    const built = await engine.buildImage({
      role: 'submission',
      context: readableOf(await contextOf(containerfile)),
      labels,
    });
    images.push(built.image);
    expect(built.cached).toBe(false);
    const result = await engine.run({
      image: built.image,
      command: ['/bin/busybox', 'sh', '-c', 'cat /made /a.txt; /bin/busybox stat -c %u /made'],
      mounts: [],
      labels,
      limits: { ...DEFAULT_LIMITS, memoryBytes: 128 * 1024 ** 2 },
      timeoutMs: 60_000,
      logTailLines: 50,
      logTailBytes: 16 * 1024,
    });
    expect(result.exitCode).toBe(0);
    expect(result.logTail.split('\n').filter(Boolean)).toEqual([marker, 'a', '1000']);
    const made = await execEngine(
      engine.info,
      ['image', 'inspect', '--format', '{{len .Config.Volumes}}', built.image],
      { timeoutMs: 60_000 },
    );
    expect(made.trim()).toBe('0');
  });
});
