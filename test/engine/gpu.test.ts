import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { LABEL_WORKER } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { Engine } from '../../src/engine/types.js';
import { busyboxContext } from '../support/busybox-context.js';
import { requireEngines, VARIANTS } from '../support/engine-variants.js';
import { type FakeGpus, makeFakeGpus } from '../support/fake-gpus.js';

// GPUs reach a hardened container through CDI, one device per GPU by UUID, with every
// hardening flag still on; seen from inside. The GPUs are character devices made for
// the test (see fake-gpus.ts), as GPU-NOTES.md describes.

const podman = VARIANTS['podman-rootful'];
const docker = VARIANTS.docker;

const SEE = [
  'for f in /dev/nvidia*; do [ -e "$f" ] && echo "dev=$f $(stat -c %u "$f")"; done',
  "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
  'awk \'$2 == "/" { print "root=" $4 }\' /proc/mounts',
  'echo uid=$(id -u)',
  "grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' | sed 's/^/if=/'",
].join('; ');

describe.skipIf(podman.unavailable() !== undefined && !requireEngines)(
  'GPUs in hardened podman containers',
  { timeout: 300_000 },
  () => {
    let engine: Engine;
    let gpus: FakeGpus;
    let image: string;
    const labels = { [LABEL_WORKER]: `gpu-test-${process.pid}` };

    beforeAll(async () => {
      gpus = await makeFakeGpus({ count: 2 });
      engine = await createEngine(podman.options);
      const built = await engine.buildImage({
        role: 'gpu-test',
        context: Readable.from([await busyboxContext()]),
        labels,
      });
      image = built.image;
    });

    afterAll(async () => {
      await engine?.removeByLabels(labels);
      await gpus?.remove();
    });

    async function see(uuids: string[]): Promise<string[]> {
      const result = await engine.run({
        image,
        command: ['sh', '-c', SEE],
        mounts: [],
        labels,
        limits: DEFAULT_LIMITS,
        timeoutMs: 60_000,
        logTailLines: 100,
        logTailBytes: 16 * 1024,
        ...(uuids.length ? { gpus: { kind: gpus.kind, uuids } } : {}),
      });
      expect(result.exitCode, result.logTail).toBe(0);
      return result.logTail.split('\n').filter(Boolean);
    }

    it('a container given GPU 1 by UUID sees exactly /dev/nvidia1, owned by its user, and stays hardened', async () => {
      const lines = await see([gpus.uuids[1] as string]);
      expect(lines.filter((l) => l.startsWith('dev='))).toEqual(['dev=/dev/nvidia1 1000']);
      expect(lines).toContain('uid=1000');
      expect(lines.find((l) => l.startsWith('root='))).toMatch(/^root=ro(,|$)/);
      expect(lines.filter((l) => l.startsWith('if='))).toEqual(['if=lo']);
      const status = Object.fromEntries(
        lines.filter((l) => /^[A-Za-z]+:/.test(l)).map((l) => l.split(/:\s+/) as [string, string]),
      );
      expect(status).toMatchObject({
        CapEff: '0000000000000000',
        CapBnd: '0000000000000000',
        NoNewPrivs: '1',
        Seccomp: '2',
      });
    });

    it('two GPUs are two devices; a container given none sees no /dev/nvidia*', async () => {
      const both = await see([...gpus.uuids]);
      expect(both.filter((l) => l.startsWith('dev=')).sort()).toEqual([
        'dev=/dev/nvidia0 1000',
        'dev=/dev/nvidia1 1000',
      ]);
      const none = await see([]);
      expect(none.filter((l) => l.startsWith('dev='))).toEqual([]);
    });

    it("a GPU the CDI spec does not name is a host problem, not the submission's", async () => {
      const error = await see(['GPU-00000000-0000-0000-0000-00000000dead']).catch((e) => e);
      expect(error.code).toBe('ENGINE_FAILED');
      expect(error.retryable).toBe(true);
      expect(error.hint).toMatch(/CDI spec/);
    });
  },
);

describe.skipIf(docker.unavailable() !== undefined && !requireEngines)(
  'GPUs asked of a docker without the NVIDIA hook',
  { timeout: 300_000 },
  () => {
    it('fail with an error that names the missing toolkit', async () => {
      const engine = await createEngine(docker.options);
      expect(engine.info.gpuDevices).toBe('nvidia-hook');
      const labels = { [LABEL_WORKER]: `gpu-test-docker-${process.pid}` };
      try {
        const built = await engine.buildImage({
          role: 'gpu-test',
          context: Readable.from([await busyboxContext()]),
          labels,
        });
        const error = await engine
          .run({
            image: built.image,
            command: ['true'],
            mounts: [],
            labels,
            limits: DEFAULT_LIMITS,
            timeoutMs: 60_000,
            logTailLines: 10,
            logTailBytes: 1024,
            gpus: { kind: 'nvidia.com/gpu', uuids: ['GPU-00000000-0000-0000-0000-000000000001'] },
          })
          .catch((e) => e);
        expect(error.code).toBe('ENGINE_FAILED');
        expect(error.hint).toMatch(/NVIDIA Container Toolkit's hook/);
      } finally {
        await engine.removeByLabels(labels);
      }
    });
  },
);
