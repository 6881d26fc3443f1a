import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { probeEngine } from '../../src/doctor/probe.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import type { Engine } from '../../src/engine/types.js';
import { filesOfTar, readableOf, tarOf } from '../support/engine-tar.js';
import { requireEngines, VARIANTS } from '../support/engine-variants.js';

// docker -H: the daemon named by --engine-host (here its own socket, given as a URL, as
// DOCKER_HOST would give it) gets every call; doctor's probe passes through it, and files
// go into and out of a volume through the helper container.

const docker = VARIANTS.docker;
const why = docker.unavailable();
const url = 'unix:///run/docker.sock';

describe.skipIf(why !== undefined && !requireEngines)(
  'a docker daemon given as --engine-host',
  () => {
    const labels = { [LABEL_WORKER]: `test-docker-remote-${randomBytes(4).toString('hex')}` };
    let engine: Engine | undefined;

    afterAll(async () => {
      await engine?.removeByLabels(labels);
    });

    it('is taken from DOCKER_HOST, passes the probe and round-trips a volume', async () => {
      const saved = process.env.DOCKER_HOST;
      process.env.DOCKER_HOST = url;
      try {
        engine = await createEngine(docker.options);
      } finally {
        if (saved === undefined) delete process.env.DOCKER_HOST;
        else process.env.DOCKER_HOST = saved;
      }
      expect(engine.info.engineHost).toBe(url);
      expect(engine.info.graphRoot).toBeUndefined();
      const checks = await probeEngine(engine);
      expect(checks.filter((c) => c.status === 'fail')).toEqual([]);
      expect(checks.find((c) => c.name === 'engine')?.message).toContain(`at ${url}`);
      expect(checks.find((c) => c.name === 'remote-engine')?.status).toBe('warn');

      const volume = await engine.createVolume(labels);
      const content = randomBytes(64 * 1024);
      await engine.importVolume(
        volume,
        readableOf(await tarOf([{ name: 'model.bin', content, uid: 1000, gid: 1000 }])),
      );
      const files = await filesOfTar(engine.exportVolume(volume));
      expect(files.get('model.bin')?.equals(content)).toBe(true);
    });
  },
);
