import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { probeEngine } from '../../src/doctor/probe.js';
import {
  judgeCoreDumps,
  judgeProbe,
  judgeUserns,
  parseProbe,
} from '../../src/doctor/probe-facts.js';
import { unenforcedLimits } from '../../src/engine/detect.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { Engine, EngineInfo } from '../../src/engine/types.js';
import { usernsFor } from '../../src/engine/userns-pool.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const MIB = 1024 ** 2;
const limits = { ...DEFAULT_LIMITS, memoryBytes: 256 * MIB, tmpfsBytes: 64 * MIB, pidsLimit: 256 };
const podmanInfo: Pick<EngineInfo, 'name' | 'unenforcedLimits'> = {
  name: 'podman',
  unenforcedLimits: [],
};

/** What the probe printed in a container run hardened by rootful podman 4.3 with runc (cgroup v1). */
const HARDENED = [
  'mount=overlay / overlay ro,relatime,lowerdir=/var/lib/containers/storage/overlay/l/X,upperdir=/u,workdir=/w 0 0',
  'mount=sysfs /sys sysfs ro,nosuid,nodev,noexec,relatime 0 0',
  'mount=tmpfs /tmp tmpfs rw,nosuid,nodev,relatime,size=65536k 0 0',
  'mount=proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0',
  'mount=shm /dev/shm tmpfs rw,nosuid,nodev,noexec,relatime,size=65536k 0 0',
  'mount=/dev/vda /probe-input ext4 ro,relatime 0 0',
  'status=Uid:\t1000\t1000\t1000\t1000',
  'status=Gid:\t1000\t1000\t1000\t1000',
  'status=CapPrm:\t0000000000000000',
  'status=CapEff:\t0000000000000000',
  'status=CapBnd:\t0000000000000000',
  'status=NoNewPrivs:\t1',
  'status=Seccomp:\t2',
  'if=lo',
  'cgroup=memory/memory.limit_in_bytes=268435456',
  'cgroup=pids/pids.max=256',
  'input=touch: /probe-input/probe: Read-only file system',
];

const judge = (lines: string[], info = podmanInfo) => judgeProbe(parseProbe(lines), info, limits);
const replace = (from: string | RegExp, to: string) =>
  HARDENED.map((line) => line.replace(from, to));

describe("doctor's findings from inside the probe container", () => {
  it('passes every finding of a hardened container', () => {
    const checks = judge(HARDENED);
    expect(checks.filter((c) => c.status !== 'pass')).toEqual([]);
    expect(checks.map((c) => c.name)).toEqual([
      'network',
      'capabilities',
      'no-new-privileges',
      'seccomp',
      'read-only-root',
      'user',
      'tmp',
      'memory-limit',
      'pids-limit',
      'read-only-inputs',
    ]);
  });

  // Each case is one thing off; exactly that finding fails, with one line and a hint.
  it.each([
    { name: 'network', lines: [...HARDENED, 'if=eth0'], says: /lo, eth0/ },
    {
      name: 'capabilities',
      // A non-root user keeps CapEff 0 even when the bounding set is full (--privileged, --cap-add).
      lines: replace(/CapBnd:\t0+/, 'CapBnd:\t000001ffffffffff'),
      says: /CapBnd 000001ffffffffff/,
    },
    {
      name: 'capabilities',
      lines: replace(/CapPrm:\t0+/, 'CapPrm:\t0000000000200000'),
      says: /CapPrm/,
    },
    { name: 'no-new-privileges', lines: replace('NoNewPrivs:\t1', 'NoNewPrivs:\t0'), says: /: 0/ },
    { name: 'seccomp', lines: replace('Seccomp:\t2', 'Seccomp:\t0'), says: /: 0/ },
    {
      name: 'read-only-root',
      lines: replace('overlay ro,relatime', 'overlay rw,relatime'),
      says: /mounted rw/,
    },
    {
      name: 'read-only-root',
      // A later mount on / hides the read-only one.
      lines: [...HARDENED, 'mount=overlay / overlay rw,relatime 0 0'],
      says: /mounted rw/,
    },
    { name: 'user', lines: replace(/Uid:.*/, 'Uid:\t0\t0\t0\t0'), says: /uid 0/ },
    { name: 'user', lines: replace(/Gid:.*/, 'Gid:\t0\t0\t0\t0'), says: /gid 0/ },
    { name: 'tmp', lines: HARDENED.filter((l) => !l.includes(' /tmp ')), says: /not a mount/ },
    {
      name: 'tmp',
      lines: replace('nosuid,nodev,relatime,size=65536k', 'relatime,size=65536k'),
      says: /tmpfs/,
    },
    { name: 'tmp', lines: replace('relatime,size=65536k 0 0', 'relatime 0 0'), says: /tmpfs/ },
    {
      name: 'memory-limit',
      lines: replace('=268435456', '=9223372036854771712'),
      says: /9223372036854771712/,
    },
    { name: 'pids-limit', lines: replace('pids.max=256', 'pids.max=max'), says: /max/ },
    {
      name: 'pids-limit',
      lines: HARDENED.filter((l) => !l.includes('pids')),
      says: /no cgroup file/,
    },
    { name: 'read-only-inputs', lines: replace(/^input=.*/, 'input=written'), says: /written/ },
    {
      // Refused for want of permission is not a read-only mount.
      name: 'read-only-inputs',
      lines: replace('Read-only file system', 'Permission denied'),
      says: /Permission denied/,
    },
  ])('fails $name: $says', ({ name, lines, says }) => {
    const checks = judge(lines);
    const failed = checks.filter((c) => c.status !== 'pass');
    expect(failed.map((c) => [c.name, c.status])).toEqual([[name, 'fail']]);
    expect(failed[0]?.message).toMatch(says);
    expect(failed[0]?.message).not.toContain('\n');
    expect(failed[0]?.hint).toBeTruthy();
  });

  it('says whether the container had the host ids it was given, and no core dumps', () => {
    const given = {
      uid: { start: 2147549183, count: 65536 },
      gid: { start: 2147549183, count: 65536 },
    };
    const own = parseProbe([
      'uidmap=0 2147549183 65536',
      'limit=Max core file size        0                    0                    bytes',
    ]);
    expect(judgeUserns(own, given)).toMatchObject({ name: 'userns', status: 'pass' });
    expect(judgeCoreDumps(own)).toMatchObject({ status: 'pass' });
    const hosts = parseProbe([
      'uidmap=0 0 4294967295',
      'limit=Max core file size        unlimited            unlimited            bytes',
    ]);
    expect(judgeUserns(hosts, given)).toMatchObject({ status: 'fail' });
    expect(judgeUserns(hosts, 'docker gives containers no namespace')).toMatchObject({
      status: 'warn',
      message: expect.stringContaining('uid 0 inside is host uid 0'),
    });
    expect(judgeCoreDumps(hosts)).toMatchObject({
      status: 'fail',
      message: expect.stringContaining('unlimited / unlimited'),
    });
  });

  it('reads cgroup v2 files as well as v1', () => {
    const v2 = replace('memory/memory.limit_in_bytes', 'memory.max').map((l) =>
      l.replace('pids/pids.max', 'pids.max'),
    );
    expect(judge(v2).filter((c) => c.status !== 'pass')).toEqual([]);
  });

  it('skips the limits the engine says it cannot enforce (rootless on cgroup v1)', () => {
    const unlimited = replace('=268435456', '=9223372036854771712').map((l) =>
      l.replace('pids.max=256', 'pids.max=max'),
    );
    const rootless = {
      ...podmanInfo,
      unenforcedLimits: unenforcedLimits({ name: 'podman', rootless: true, cgroupVersion: 1 }),
    };
    const checks = judge(unlimited, rootless);
    expect(checks.filter((c) => c.status !== 'pass')).toEqual([]);
    expect(checks.map((c) => c.name)).not.toContain('memory-limit');
  });
});

const podman = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(podman);

describe.skipIf(why)("doctor's probe on rootful podman", { timeout: 300_000 }, () => {
  let engine: Engine;
  const labels = { [LABEL_WORKER]: `test-probe-${randomBytes(4).toString('hex')}` };
  beforeAll(async () => {
    engine = await createEngine(podman.options);
  });
  afterAll(() => engine?.removeByLabels(labels));

  it('fails the findings a weakened container shows, and only those', async () => {
    const checks = await probeEngine(engine, {
      limits,
      extraArgs: ['--cap-add=SYS_ADMIN', '--security-opt', 'seccomp=unconfined'],
    });
    const failed = checks.filter((c) => c.status === 'fail');
    expect(failed.map((c) => c.name)).toEqual(['capabilities', 'seccomp']);
    expect(failed.every((c) => c.hint)).toBe(true);
    expect(checks.find((c) => c.name === 'run')?.status).toBe('pass');
  });

  it('proves from inside that the probe container has host ids of its own', async () => {
    const userns = await usernsFor('auto', engine);
    const checks = await probeEngine(engine, { limits, userns });
    const found = checks.find((c) => c.name === 'userns');
    expect(found?.status, found?.message).toBe('pass');
    expect(found?.message).toMatch(/uid 0 inside is host uid \d+ \(65536 ids\)/);
    expect(checks.find((c) => c.name === 'core-dumps')?.status).toBe('pass');
    const shared = await probeEngine(engine, { limits, userns: await usernsFor('off', engine) });
    expect(shared.find((c) => c.name === 'userns')).toMatchObject({
      status: 'warn',
      message: expect.stringContaining('uid 0 inside is host uid 0'),
    });
  });
});
