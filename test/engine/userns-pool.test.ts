import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockStateDir } from '../../src/config/state-lock.js';
import { createEngine } from '../../src/container-engine.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { Engine, IdMaps, RunSpec } from '../../src/engine/types.js';
import {
  NAMESPACE_SIZE,
  readPoolRange,
  slotIdMap,
  UsernsPool,
  usernsFor,
} from '../../src/engine/userns-pool.js';
import { busyboxImage } from '../support/busybox-context.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const RANGE = { uidStart: 2147483647, gidStart: 2147483647, slots: 32768 };

describe('the user namespace ranges', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-userns-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const files = async (uid: string, gid = uid) => {
    const subuid = join(dir, `subuid-${randomBytes(3).toString('hex')}`);
    const subgid = `${subuid}-gid`;
    await writeFile(subuid, uid);
    await writeFile(subgid, gid);
    return { subuid, subgid };
  };

  it('come from the containers entry of both files, 65536 ids each', async () => {
    const range = await readPoolRange(
      await files('alice:100000:65536\ncontainers:2147483647:2147483648\n'),
    );
    expect(range).toEqual(RANGE);
    expect(slotIdMap(RANGE, 1)).toEqual({
      uid: { start: 2147483647 + NAMESPACE_SIZE, count: NAMESPACE_SIZE },
      gid: { start: 2147483647 + NAMESPACE_SIZE, count: NAMESPACE_SIZE },
    });
  });

  it('are refused, with why, when missing, too small or overlapping a user', async () => {
    const none = await readPoolRange(await files('alice:100000:65536\n'));
    expect(none).toMatch(/has no `containers` entry$/);
    const small = await readPoolRange(await files('containers:3000000:65536\n'));
    expect(small).toMatch(/has 65536 ids, fewer than the 262144 of 3 containers at once/);
    const overlap = await readPoolRange(
      await files('alice:3000000:65536\ncontainers:2000000:2000000\n'),
    );
    expect(overlap).toMatch(/overlaps the range of alice \(3000000:65536\)/);
    const gidOnly = await readPoolRange(await files('containers:3000000:1000000\n', 'alice:1:2\n'));
    expect(gidOnly).toMatch(/-gid has no `containers` entry$/);
  });

  it("are held one per taker, never slot 0 (the builds'), and given back", async () => {
    const pool = new UsernsPool({ ...RANGE, slots: 4 }, join(dir, 'pool'), async () => false);
    const held = await Promise.all([pool.acquire(), pool.acquire(), pool.acquire()]);
    const starts = held.map((h) => h.map.uid.start);
    expect(new Set(starts).size).toBe(3);
    expect(starts).not.toContain(RANGE.uidStart);
    await expect(pool.acquire()).rejects.toThrow(/every one of the 4 user namespace ranges/);
    held[0]?.release();
    expect((await pool.acquire()).map.uid.start).toBe(starts[0]);
  });

  it("skip a dead holder's range while a container still has it", async () => {
    const at = join(dir, 'dead');
    const map = slotIdMap(RANGE, 1);
    // A holder that died: its pid does not run.
    await rm(at, { recursive: true, force: true });
    const slot = join(at, '1');
    await mkdir(slot, { recursive: true });
    await writeFile(
      join(slot, 'lock'),
      `${JSON.stringify({ pid: 2 ** 22 + 1, start: '1', boot: 'x' })}\n`,
    );
    const used = new UsernsPool(
      { ...RANGE, slots: 2 },
      at,
      async (m) => m.uid.start === map.uid.start,
    );
    await expect(used.acquire()).rejects.toThrow(/in use/);
    const free = new UsernsPool({ ...RANGE, slots: 2 }, at, async () => false);
    expect((await free.acquire()).map).toEqual(map);
  });

  it('are given back by a sweep once their holder is dead and no container has them', async () => {
    const at = join(dir, 'sweep');
    await rm(at, { recursive: true, force: true });
    const deadHolder = `${JSON.stringify({ pid: 2 ** 22 + 1, start: '1', boot: 'x' })}\n`;
    for (const index of ['1', '2']) {
      await mkdir(join(at, index), { recursive: true });
      await writeFile(join(at, index, 'lock'), deadHolder);
    }
    const range = { ...RANGE, slots: 4 };
    const stillUsed = slotIdMap(range, 2).uid.start;
    await mkdir(join(at, '3'));
    const live = await lockStateDir(join(at, '3'));
    const pool = new UsernsPool(range, at, async (m) => m.uid.start === stillUsed);
    expect(await pool.sweep()).toBe(1);
    // The live holder's slot and the one a container still uses stay.
    expect((await readdir(at)).sort()).toEqual(['2', '3']);
    live.release();
  });
});

const podman = VARIANTS['podman-rootful'];

describe.skipIf(unavailableUnlessRequired(podman) !== undefined)(
  'a user namespace per container (rootful podman)',
  { timeout: 180_000 },
  () => {
    const labels = { [LABEL_WORKER]: `test-userns-${randomBytes(4).toString('hex')}` };
    let engine: Engine;
    let image = '';
    let pool: UsernsPool;

    beforeAll(async () => {
      engine = await createEngine(podman.options);
      const found = await usernsFor('auto', engine);
      if (!found.userns) throw new Error(`no user namespaces here: ${found.usernsShared}`);
      pool = found.userns;
      image = await busyboxImage(engine, labels);
    });
    afterAll(async () => {
      await engine?.removeByLabels(labels);
    });

    const run = (script: string, idMaps: IdMaps | undefined, extra: Partial<RunSpec> = {}) =>
      engine.run({
        image,
        command: ['sh', '-c', script],
        mounts: [],
        labels,
        limits: { ...DEFAULT_LIMITS, nproc: 32, pidsLimit: 256 },
        timeoutMs: 60_000,
        logTailLines: 50,
        logTailBytes: 16 * 1024,
        ...(idMaps ? { idMaps } : {}),
        ...extra,
      });

    it("maps the container's ids onto its own host range, not the host's", async () => {
      const held = await pool.acquire();
      try {
        const result = await run('cat /proc/self/uid_map; id -u; ls -ln /etc/passwd', held.map);
        expect(result.exitCode, result.logTail).toBe(0);
        const [map, uid, passwd] = result.logTail.split('\n');
        expect(map?.trim().split(/\s+/)).toEqual([
          '0',
          String(held.map.uid.start),
          String(NAMESPACE_SIZE),
        ]);
        expect(uid).toBe('1000');
        // The image's files are still root's inside (an id-mapped mount, not a copy).
        expect(passwd?.split(/\s+/).slice(2, 4)).toEqual(['0', '0']);
      } finally {
        held.release();
      }
    });

    // The attack: one task's processes fill RLIMIT_NPROC of uid 1000, and another task's
    // container, also uid 1000, can fork no more. Each in a namespace of its own, each
    // has its own count.
    // (Without them, on the same host, the second container cannot even start its init:
    // "catatonit: failed to fork child: Resource temporarily unavailable".)
    it('lets a container fork while another holds all of its nproc', async () => {
      const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
      try {
        // 29 sleeps, the shell and the init: the 32 processes uid 1000 may have.
        const filler = run(
          'i=0; while [ $i -lt 29 ]; do sleep 20 & i=$((i+1)); done; echo filled; wait',
          a.map,
        );
        await new Promise((r) => setTimeout(r, 4_000));
        const victim = await run(
          'ok=0; i=0; while [ $i -lt 10 ]; do sleep 1 & ok=$((ok+1)); i=$((i+1)); done; wait; echo forked=$ok',
          b.map,
        );
        expect(victim.logTail).toContain('forked=10');
        const filled = await filler;
        expect(filled.logTail).toContain('filled');
        expect(filled.durationMs).toBeGreaterThan(15_000);
      } finally {
        a.release();
        b.release();
      }
    });

    it('leaves no slot folder behind once every range is given back', async () => {
      const held = await pool.acquire();
      held.release();
      await new Promise((r) => setTimeout(r, 100));
      expect(await readdir(pool.dir)).not.toContain(
        String((held.map.uid.start - pool.range.uidStart) / NAMESPACE_SIZE),
      );
    });
  },
);
