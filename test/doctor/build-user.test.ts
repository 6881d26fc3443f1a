import { describe, expect, it } from 'vitest';
import { findBuildUser } from '../../src/build/user.js';
import { createEngine } from '../../src/container-engine.js';
import { buildNamespaceCheck, judgeBuildNamespace } from '../../src/doctor/build-user.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const podman = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(podman);

describe('judgeBuildNamespace', () => {
  it("warns when a RUN step was the host's root", () => {
    const check = judgeBuildNamespace(
      ['uid_map:          0          0 4294967295', 'CapEff:\t00000000000000fb'],
      false,
      {},
      undefined,
    );
    expect(check.status).toBe('warn');
    expect(check.message).toMatch("run as the host's root");
    expect(check.hint).toMatch('useradd -m cwbuild');
  });

  it('passes and names the build user when a RUN step was root of its namespace', () => {
    const check = judgeBuildNamespace(
      ['uid_map:          0       1002          1', 'CapEff:\t00000000000000fb'],
      false,
      {},
      'cwbuild',
    );
    expect(check).toMatchObject({ status: 'pass' });
    expect(check.message).toMatch('the build user cwbuild (host uid 1002)');
    expect(check.message).toMatch('CapEff 00000000000000fb');
  });

  it('fails when the build printed no uid map', () => {
    expect(judgeBuildNamespace(['CapEff:\t0'], false, {}, undefined).status).toBe('fail');
  });
});

describe.skipIf(why)('buildNamespaceCheck with rootful podman', { timeout: 300_000 }, () => {
  it('builds as a submission is built and says whose root its RUN step was', async () => {
    const engine = await createEngine(podman.options);
    const user = await findBuildUser('auto');
    const check = await buildNamespaceCheck(engine, {});
    if (user) {
      expect(check.status, check.detail).toBe('pass');
      expect(check.message).toMatch(`the build user ${user.name} (host uid ${user.uid})`);
    } else {
      expect(check.status, check.detail).toBe('warn');
    }
    // --build-user none: the host's root, and doctor says so.
    const none = await buildNamespaceCheck(
      await createEngine({ ...podman.options, buildUser: 'none' }),
      { buildUser: 'none' },
    );
    expect(none.status, none.detail).toBe('warn');
    expect(none.message).toMatch("run as the host's root");
  });

  it('fails a named build user that does not exist', async () => {
    const engine = await createEngine({ ...podman.options, buildUser: 'cw-no-such-user' });
    const check = await buildNamespaceCheck(engine, { buildUser: 'cw-no-such-user' });
    expect(check.status).toBe('fail');
    expect(check.message).toMatch('--build-user cw-no-such-user: no such user');
  });
});
