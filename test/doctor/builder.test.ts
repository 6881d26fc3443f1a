import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { builderCheck } from '../../src/doctor/builder.js';
import type { EngineInfo } from '../../src/engine/types.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const podman = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(podman);

const info = (extra: Partial<EngineInfo>): EngineInfo => ({
  name: 'podman',
  path: '/usr/bin/podman',
  version: '4.3.1',
  clientVersion: '4.3.1',
  rootless: false,
  ociRuntime: 'runc',
  cgroupVersion: 2,
  cgroupHybrid: false,
  storageDriver: 'overlay',
  ...extra,
});

describe('builderCheck', () => {
  it.each(['1.28.2', '1.35.0', '0.99.9', undefined])(
    'warns about CVE-2024-1753 with buildah %s, saying what the worker does',
    (buildahVersion) => {
      const check = builderCheck(info({ buildahVersion }));
      expect(check.status).toBe('warn');
      expect(check.message).toContain(`buildah ${buildahVersion ?? '(version unknown)'}`);
      expect(check.message).toContain('CVE-2024-1753');
      expect(check.message).toContain('refuses RUN --mount of any type but tmpfs');
      expect(check.message).toContain('--workflow-build-policy trusted');
      expect(check.hint).toContain('1.35.1');
    },
  );

  it('says when the workflow is checked strictly too', () => {
    const check = builderCheck(info({ buildahVersion: '1.28.2' }), 'strict');
    expect(check.message).toContain('checked the same way (--workflow-build-policy strict)');
  });

  it.each(['1.35.1', '1.36.0', '2.0.0'])('passes buildah %s', (buildahVersion) => {
    expect(builderCheck(info({ buildahVersion }))).toMatchObject({
      status: 'pass',
      message: `podman 4.3.1 builds with buildah ${buildahVersion}: no known build escape`,
    });
  });

  it('names docker, which does not build with buildah', () => {
    expect(builderCheck(info({ name: 'docker', version: '20.10.24' }))).toMatchObject({
      status: 'pass',
      message: 'docker 20.10.24 builds images (not buildah)',
    });
  });

  it.skipIf(why)('reads the buildah version podman reports', async () => {
    const engine = await createEngine(podman.options);
    const { stdout } = await execa('/usr/bin/podman', [
      'info',
      '--format',
      '{{.Host.BuildahVersion}}',
    ]);
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(engine.info.buildahVersion).toBe(stdout.trim());
    const check = builderCheck(engine.info);
    expect(check.message).toContain(`buildah ${stdout.trim()}`);
  });
});
