import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerLiveDir } from '../../src/config/paths.js';
import { lockStateDir } from '../../src/config/state-lock.js';
import { createEngine } from '../../src/container-engine.js';
import { processGroupCheck, stateFolderCheck } from '../../src/doctor/host.js';
import { liveWorker, orphansCheck } from '../../src/doctor/leftovers.js';
import { LABEL_MANAGED, LABEL_WORKER } from '../../src/engine/labels.js';
import type { Engine } from '../../src/engine/types.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const podman = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(podman);

describe.skipIf(why)('doctor: orphans', () => {
  let engine: Engine;
  const dead = randomUUID();
  const live = randomUUID();
  let release: () => void;

  beforeAll(async () => {
    engine = await createEngine(podman.options);
    await mkdir(workerLiveDir(live), { recursive: true });
    release = (await lockStateDir(workerLiveDir(live))).release;
    for (const worker of [dead, live]) {
      await execa('podman', [
        'volume',
        'create',
        '--label',
        `${LABEL_MANAGED}=true`,
        '--label',
        `${LABEL_WORKER}=${worker}`,
        `cw-orphan-${worker}`,
      ]);
    }
  });
  afterAll(async () => {
    release();
    await rm(workerLiveDir(live), { recursive: true, force: true });
    for (const worker of [dead, live]) {
      await execa('podman', ['volume', 'rm', '-f', `cw-orphan-${worker}`], { reject: false });
    }
  });

  it("names the dead worker's volume, and not the live worker's", async () => {
    // Other workers' leftovers on this machine may be named too: not this test's to judge.
    const check = await orphansCheck(engine, liveWorker);
    expect(check.status).toBe('warn');
    expect(check.message).toContain(dead);
    expect(check.message).not.toContain(live);
    expect(check.hint).toContain(`label=${LABEL_WORKER}=ID`);
  });

  it('a task exec leaves no live folder behind', async () => {
    const cli = join(import.meta.dirname, '..', '..', 'bin', 'run.js');
    const state = await mkdtemp(join(tmpdir(), 'cw-doctor-live-'));
    const before = new Set(await readdir(tmpdir()));
    // A task file that never parses still runs under its own worker id first.
    const run = await execa(
      'node',
      [cli, 'task', 'exec', '-', '--state-dir', state, '--oci-runtime', 'runc'],
      { input: '{}', reject: false },
    );
    expect(run.exitCode).toBe(2);
    const left = (await readdir(tmpdir())).filter(
      (name) => !before.has(name) && name.endsWith('.live'),
    );
    expect(left).toEqual([]);
    await rm(state, { recursive: true, force: true });
  });
});

describe('doctor: the state folder and the process group', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-doctor-host-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('warns about a state folder in memory, or in a container without a volume', async () => {
    const shm = await mkdtemp('/dev/shm/cw-state-');
    try {
      const check = await stateFolderCheck(shm, false);
      expect(check.status).toBe('warn');
      expect(check.message).toContain('tmpfs');
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
    expect((await stateFolderCheck(dir, false)).status).toBe('pass');
    const inside = await stateFolderCheck(dir, true);
    expect(inside.status).toBe('warn');
    expect(inside.hint).toContain('-v compute-worker-state:');
  });

  // A stand-in daemon: holds the state folder's lock as run does, in a group or not.
  const holder = (state: string, detached: boolean) =>
    execa(
      'node',
      [
        '--input-type=module',
        '-e',
        `const { lockStateDir } = await import(${JSON.stringify(join(import.meta.dirname, '..', '..', 'dist', 'src', 'config', 'state-lock.js'))}); await lockStateDir(process.argv[1]); console.log('locked'); setInterval(() => {}, 1000);`,
        state,
      ],
      { detached, reject: false, buffer: false },
    );

  for (const detached of [false, true]) {
    it(`says whether the daemon shares its parent's process group (${detached ? 'own group' : 'shared'})`, async () => {
      const state = await mkdtemp(join(dir, 'state-'));
      const child = holder(state, detached);
      try {
        await new Promise<void>((resolve) => child.stdout?.once('data', () => resolve()));
        const check = await processGroupCheck(state);
        expect(check.status).toBe(detached ? 'pass' : 'warn');
        expect(check.message).toContain(`pid ${child.pid}`);
      } finally {
        child.kill('SIGKILL');
        await child;
      }
    });
  }

  it('skips when no daemon runs on the folder', async () => {
    expect((await processGroupCheck(dir)).status).toBe('skip');
  });
});
