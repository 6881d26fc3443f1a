import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { probeEngine } from '../../src/doctor/probe.js';
import { execEngine } from '../../src/engine/exec.js';
import { WorkerError } from '../../src/errors.js';
import { defineConformanceSuite } from '../support/engine-conformance.js';
import { requireEngines, VARIANTS } from '../support/engine-variants.js';
import { PODMAN, type PodmanService, startPodmanService } from '../support/podman-service.js';

// The engine layer against rootful podman's service on a unix socket, as a worker drives an
// engine on another host: the conformance suite, then proof that every call went through
// the socket (the service keeps its own storage, and logs each API request).

const variant = VARIANTS['podman-remote'];
const why = variant.unavailable();
let service: PodmanService | undefined;

beforeAll(async () => {
  if (!why) service = await startPodmanService();
}, 60_000);

afterAll(async () => {
  await service?.stop();
});

defineConformanceSuite(variant);

describe.skipIf(why !== undefined && !requireEngines)('a remote podman', () => {
  const live = () => service as PodmanService;

  it('got every call of the suite through its socket, into its own storage', async () => {
    const log = live().log();
    // Builds, volumes, containers and the helper's copies were API requests to the service.
    expect(log).toMatch(/"POST \/v[\d.]+\/libpod\/build\?/);
    expect(log).toMatch(/"POST \/v[\d.]+\/libpod\/volumes\/create /);
    expect(log).toMatch(/"POST \/v[\d.]+\/libpod\/containers\/create /);
    expect(log).toMatch(/"PUT \/v[\d.]+\/libpod\/containers\/cw-helper-[0-9a-f]+\/archive\?/);
    expect(log).toMatch(/"GET \/v[\d.]+\/libpod\/containers\/cw-helper-[0-9a-f]+\/archive\?/);
    // The suite's image is in the service's storage, which nothing else uses.
    const images = await execa(PODMAN, [
      ...live().storageArgs,
      'images',
      '--format',
      '{{.Repository}}',
    ]);
    expect(images.stdout.split('\n')).toContain('localhost/compute-worker/conformance');
  });

  it('is detected as remote: its URL kept, its storage folder not taken for this host’s', async () => {
    const engine = await createEngine(variant.options);
    expect(engine.info.engineHost).toBe(live().url);
    expect(engine.info.graphRoot).toBeUndefined();
    expect(engine.info.rootless).toBe(false);
    // Volumes have no host folder here: the disk watch has nothing to walk.
    const volume = await engine.createVolume({ 'cw.test': 'remote' });
    try {
      expect(await engine.volumeMountpoint(volume)).toBeUndefined();
    } finally {
      await engine.removeByLabels({ 'cw.test': 'remote' });
    }
  });

  it('takes the socket from CONTAINER_HOST when --engine-host is absent', async () => {
    const { engineHost: _, ...local } = variant.options;
    const saved = process.env.CONTAINER_HOST;
    process.env.CONTAINER_HOST = live().url;
    try {
      const engine = await createEngine(local);
      expect(engine.info.engineHost).toBe(live().url);
      const before = live().log().length;
      await engine.ping();
      expect(live().log().slice(before)).toMatch(/libpod\/version/);
    } finally {
      if (saved === undefined) delete process.env.CONTAINER_HOST;
      else process.env.CONTAINER_HOST = saved;
    }
  });

  it('refuses --oci-runtime and --build-userns auto, which cannot reach the remote host', async () => {
    const error = await createEngine({ ...variant.options, ociRuntime: 'runc' }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(WorkerError);
    expect(error).toMatchObject({ code: 'CONFIG_INVALID' });
    expect((error as WorkerError).message).toContain('--oci-runtime');
    // Nor does this host's /etc/subuid say anything of the engine's host.
    const userns = await createEngine({ ...variant.options, buildUserns: 'auto' }).catch(
      (e: unknown) => e,
    );
    expect(userns).toMatchObject({ code: 'CONFIG_INVALID' });
    expect((userns as WorkerError).hint).toContain('START:COUNT');
  });

  it('says in doctor where the engine is and what is not enforced, and passes', async () => {
    const engine = await createEngine(variant.options);
    const checks = await probeEngine(engine);
    expect(checks.filter((c) => c.status === 'fail')).toEqual([]);
    expect(checks.find((c) => c.name === 'engine')?.message).toContain(`at ${live().url}`);
    const remote = checks.find((c) => c.name === 'remote-engine');
    expect(remote?.status).toBe('warn');
    expect(remote?.message).toContain('--disk-limit');
    expect(remote?.message).toContain('--build-pids-limit');
  });

  it('names a service that does not answer, with the fix', async () => {
    const gone = `unix://${live().url.slice('unix://'.length)}.missing`;
    const error = await execEngine(
      { name: 'podman', path: PODMAN, engineHost: gone },
      ['version'],
      { timeoutMs: 30_000 },
    ).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ENGINE_FAILED' });
    expect((error as WorkerError).hint).toContain('podman system service');
  });
});
