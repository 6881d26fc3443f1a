import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import type { Check } from '../../src/doctor/check.js';
import { checkGpus, type GpuCheckOptions } from '../../src/doctor/gpu.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { Engine } from '../../src/engine/types.js';
import { requireEngines, VARIANTS } from '../support/engine-variants.js';
import { type FakeGpus, makeFakeGpus } from '../support/fake-gpus.js';

// Every finding of doctor's GPU chain, failing and passing, on fake GPUs: a stand-in
// nvidia-smi and nvidia-ctk, mknod devices, and CDI specs in /etc/cdi of a kind of their own.

const podman = VARIANTS['podman-rootful'];
const docker = VARIANTS.docker;
const cli = join(import.meta.dirname, '..', '..', 'bin', 'run.js');

const byName = (checks: Check[]) =>
  Object.fromEntries(checks.map((c) => [c.name, `${c.status}: ${c.message}`]));
const hintOf = (checks: Check[], name: string) => checks.find((c) => c.name === name)?.hint;

describe
  .skipIf(podman.unavailable() !== undefined && !requireEngines)
  .concurrent('doctor, GPU checks', { timeout: 300_000 }, () => {
    let engine: Engine;
    const made: FakeGpus[] = [];
    let empty: string;

    beforeAll(async () => {
      engine = await createEngine(podman.options);
      empty = await mkdtemp(join(tmpdir(), 'cw-no-tools-'));
    });
    afterAll(async () => {
      await Promise.all(made.map((g) => g.remove()));
      await rm(empty, { recursive: true, force: true });
    });

    async function fake(count = 2, options: Parameters<typeof makeFakeGpus>[0] = { count }) {
      const gpus = await makeFakeGpus({ ...options, count });
      made.push(gpus);
      return gpus;
    }

    const options = (gpus: FakeGpus | undefined, more: Partial<GpuCheckOptions> = {}) => ({
      learnGpus: 1,
      predictGpus: 0,
      learnParallelism: 1,
      predictParallelism: 1,
      selection: 'all' as const,
      cdiKind: gpus?.kind ?? 'none.example/gpu',
      limits: DEFAULT_LIMITS,
      toolDir: gpus?.binDir ?? empty,
      ...more,
    });

    it('passes the whole chain on a hook-less spec, proving one GPU and none from inside', async () => {
      const gpus = await fake(2);
      const checks = await checkGpus(engine, options(gpus));
      expect(byName(checks)).toEqual({
        'gpu-driver': expect.stringMatching(
          new RegExp(`^pass: nvidia-smi lists 0 Fake GPU 0 ${gpus.uuids[0]} .*; 1 Fake GPU 1`),
        ),
        'gpu-pool': 'pass: this worker hands out 0, 1',
        'gpu-cdi': expect.stringMatching(
          /^pass: CDI spec .* \(cdiVersion 0\.5\.0\) names every pool GPU$/,
        ),
        'gpu-cdi-hooks': 'pass: the spec runs no hook on the host',
        'gpu-toolkit': 'skip: nvidia-ctk is not installed (a hook-less spec needs none)',
        'gpu-smoke': 'pass: a hardened container given GPU 0 sees /dev/nvidia0',
        'gpu-none': 'pass: a container given no GPU sees no /dev/nvidia*',
      });
    });

    it('is skipped when no GPU is asked for and none is found; fails when asked', async () => {
      expect(byName(await checkGpus(engine, options(undefined, { learnGpus: 0 })))).toEqual({
        gpu: 'skip: no GPU asked for (--learn-gpus and --predict-gpus are 0)',
      });
      const asked = await checkGpus(engine, options(undefined));
      expect(byName(asked)).toEqual({
        'gpu-driver': expect.stringMatching(
          /^fail: nvidia-smi does not answer: GPUs were asked for, but .*nvidia-smi is not on PATH/,
        ),
      });
      expect(hintOf(asked, 'gpu-driver')).toMatch(/install the NVIDIA driver/);
    });

    it('fails a pool that cannot serve every slot, naming the flags', async () => {
      const gpus = await fake(2);
      const checks = await checkGpus(engine, options(gpus, { learnParallelism: 3 }));
      expect(byName(checks)['gpu-pool']).toMatch(
        /^fail: .*--learn-parallelism 3 × --learn-gpus 1 .* needs 3/,
      );
      const unknown = await checkGpus(engine, options(gpus, { selection: ['5'] }));
      expect(byName(unknown)['gpu-pool']).toMatch(/names GPU 5, which nvidia-smi does not list/);
    });

    it('fails without a spec of the kind, naming nvidia-ctk cdi generate', async () => {
      const gpus = await fake(1);
      const checks = await checkGpus(engine, options(gpus, { cdiKind: 'absent.example/gpu' }));
      expect(byName(checks)['gpu-cdi']).toBe(
        'fail: no CDI spec of kind absent.example/gpu in /etc/cdi or /var/run/cdi',
      );
      expect(hintOf(checks, 'gpu-cdi')).toMatch(/nvidia-ctk cdi generate/);
      expect(byName(checks)['gpu-smoke']).toMatch(/^skip/);
    });

    it('fails a stale spec whose device node is gone', async () => {
      const gpus = await fake(1);
      await gpus.writeSpec({
        cdiVersion: '0.5.0',
        kind: gpus.kind,
        devices: [
          {
            name: gpus.uuids[0],
            containerEdits: {
              deviceNodes: [{ path: '/dev/nvidia0', hostPath: '/nonexistent/g0' }],
            },
          },
        ],
      });
      const checks = await checkGpus(engine, options(gpus));
      expect(byName(checks)['gpu-cdi']).toMatch(/host files that do not exist .*\/nonexistent\/g0/);
      expect(hintOf(checks, 'gpu-cdi')).toMatch(/regenerate it: nvidia-ctk cdi generate/);
    });

    it('fails specs this podman cannot read: additionalGids, a newer cdiVersion', async () => {
      const gpus = await fake(1);
      const device = (extra = {}) => ({
        cdiVersion: '0.7.0',
        kind: gpus.kind,
        devices: [{ name: '0', containerEdits: { deviceNodes: [{ path: '/dev/nvidia0' }] } }],
        containerEdits: { ...extra },
      });
      await gpus.writeSpec(device({ additionalGids: [44] }));
      let checks = await checkGpus(engine, options(gpus));
      expect(byName(checks)['gpu-cdi']).toMatch(
        /uses additionalGids .* podman 4\.\d+\.\d+ cannot read/,
      );
      expect(hintOf(checks, 'gpu-cdi')).toMatch(/no-additional-gids-for-device-nodes/);
      await gpus.writeSpec(device());
      checks = await checkGpus(engine, options(gpus));
      expect(byName(checks)['gpu-cdi']).toMatch(
        /cdiVersion 0\.7\.0 is newer than podman .* reads \(0\.5\.0\)/,
      );
    });

    it('fails a spec that does not name a pool GPU', async () => {
      const gpus = await fake(2);
      await gpus.writeSpec({
        cdiVersion: '0.5.0',
        kind: gpus.kind,
        devices: [{ name: '0', containerEdits: { deviceNodes: [{ path: '/dev/null' }] } }],
      });
      const checks = await checkGpus(engine, options(gpus));
      expect(byName(checks)['gpu-cdi']).toBe(
        `fail: CDI spec ${gpus.specFile}: it names no device for GPU 1 (${gpus.uuids[1]})`,
      );
    });

    it('warns about hooks, and fails a toolkit with a known escape', async () => {
      const gpus = await fake(1, {
        count: 1,
        commonEdits: { hooks: [{ hookName: 'createContainer', path: '/bin/true' }] },
      });
      await gpus.toolkit('1.17.7');
      let checks = await checkGpus(engine, options(gpus));
      expect(byName(checks)['gpu-cdi-hooks']).toMatch(/^warn: .*createContainer \/bin\/true/);
      expect(byName(checks)['gpu-toolkit']).toBe(
        'fail: NVIDIA Container Toolkit 1.17.7 has known container escapes (CVE-2025-23266)',
      );
      expect(hintOf(checks, 'gpu-toolkit')).toBe('upgrade to 1.17.8 or newer');
      await gpus.toolkit('1.17.8');
      checks = await checkGpus(engine, options(gpus));
      expect(byName(checks)['gpu-toolkit']).toBe('pass: NVIDIA Container Toolkit 1.17.8');
    });

    it.skipIf(docker.unavailable() !== undefined && !requireEngines)(
      'fails docker without the NVIDIA hook',
      async () => {
        const gpus = await fake(1);
        const dockerEngine = await createEngine(docker.options);
        const checks = await checkGpus(dockerEngine, options(gpus));
        expect(byName(checks)['gpu-docker-hook']).toMatch(
          /^fail: docker gives GPUs with --gpus, which needs nvidia-container-runtime-hook/,
        );
      },
    );

    it('compute-worker doctor --learn-gpus 1 reports the chain and is ready', async () => {
      const gpus = await fake(1);
      const state = await mkdtemp(join(tmpdir(), 'cw-doctor-gpu-'));
      try {
        const result = await execa(
          'node',
          [
            cli,
            'doctor',
            '--json',
            '--state-dir',
            state,
            '--oci-runtime',
            'runc',
            '--learn-gpus',
            '1',
            '--gpu-cdi-kind',
            gpus.kind,
          ],
          { reject: false, env: { PATH: gpus.path } },
        );
        const json = JSON.parse(result.stdout) as { ready: boolean; checks: Check[] };
        const gpu = json.checks.filter((c) => c.name.startsWith('gpu'));
        expect(gpu.map((c) => `${c.name} ${c.status}`)).toEqual([
          'gpu-driver pass',
          'gpu-pool pass',
          'gpu-cdi pass',
          'gpu-cdi-hooks pass',
          'gpu-toolkit skip',
          'gpu-smoke pass',
          'gpu-none pass',
        ]);
      } finally {
        await rm(state, { recursive: true, force: true });
      }
    });
  });
