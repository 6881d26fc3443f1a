import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compareVersions } from '../../src/config/version.js';
import { gpuArgs } from '../../src/engine/args.js';
import {
  cdiVersionReadBy,
  findCdiSpecs,
  hookNames,
  missingHostFiles,
  usesAdditionalGids,
} from '../../src/gpu/cdi.js';
import { type Gpu, parseGpuList } from '../../src/gpu/discover.js';
import { checkCapacity, GpuPool, parseGpuSelection, selectPool } from '../../src/gpu/pool.js';
import { toolkitOpenCves } from '../../src/gpu/toolkit.js';

const H200 = '0, GPU-5e8441cd-3453-0d7f-3354-4aa86ff0d3ed, NVIDIA H200, 580.159.04, 143771 MiB';
const gpus: Gpu[] = parseGpuList(
  `${H200}\n1, GPU-aaaaaaaa-0000-0000-0000-000000000001, NVIDIA H200, 580.159.04, 143771 MiB\n`,
);

describe('nvidia-smi output', () => {
  it('reads index, UUID, name, driver and memory', () => {
    expect(parseGpuList(H200)).toEqual([
      {
        index: 0,
        uuid: 'GPU-5e8441cd-3453-0d7f-3354-4aa86ff0d3ed',
        name: 'NVIDIA H200',
        driverVersion: '580.159.04',
        memoryMiB: 143771,
      },
    ]);
  });

  it('refuses a line it cannot read, naming it', () => {
    expect(parseGpuList('No devices were found\n')).toEqual([]);
    expect(() => parseGpuList('NVIDIA-SMI has failed')).toThrow(/\(line 1\): NVIDIA-SMI/);
    expect(() => parseGpuList('0, not-a-uuid, X, 1, 1 MiB')).toThrow(/cannot read/);
  });
});

describe('the GPU pool', () => {
  it('is all, none, or GPUs named by index or UUID', () => {
    expect(selectPool(gpus, parseGpuSelection('all'))).toHaveLength(2);
    expect(selectPool(gpus, parseGpuSelection('none'))).toEqual([]);
    expect(selectPool(gpus, parseGpuSelection('1')).map((g) => g.index)).toEqual([1]);
    expect(
      selectPool(gpus, parseGpuSelection('GPU-5e8441cd-3453-0d7f-3354-4aa86ff0d3ed,1')).map(
        (g) => g.index,
      ),
    ).toEqual([0, 1]);
    expect(() => parseGpuSelection('0,cuda')).toThrow(/neither a GPU index nor a UUID/);
    expect(() => selectPool(gpus, ['7'])).toThrow(/names GPU 7, which nvidia-smi does not list/);
  });

  it('refuses a pool that cannot serve every task slot, naming the flags', () => {
    const demand = { learnParallelism: 2, learnGpus: 1, predictParallelism: 1, predictGpus: 1 };
    expect(() => checkCapacity(gpus, demand)).toThrow(
      /has 2 GPU\(s\), but --learn-parallelism 2 × --learn-gpus 1 \+ --predict-parallelism 1 × --predict-gpus 1 needs 3/,
    );
    expect(() => checkCapacity(gpus, { ...demand, predictGpus: 0 })).not.toThrow();
  });

  it('never gives one GPU to two tasks, and takes it back once', () => {
    const pool = new GpuPool(gpus);
    const a = pool.acquire(1);
    const b = pool.acquire(1);
    expect(a.gpus[0]?.uuid).not.toBe(b.gpus[0]?.uuid);
    expect(() => pool.acquire(1)).toThrow(/only 0 of the pool's 2 are free/);
    a.release();
    a.release();
    expect(pool.free).toBe(1);
    expect(pool.acquire(1).gpus[0]?.uuid).toBe(a.gpus[0]?.uuid);
    expect(pool.acquire(0).gpus).toEqual([]);
  });
});

describe('GPU arguments', () => {
  const uuids = ['GPU-a', 'GPU-b'];
  it('names CDI devices by UUID for podman', () => {
    expect(gpuArgs({ name: 'podman' }, { kind: 'nvidia.com/gpu', uuids })).toEqual([
      '--device',
      'nvidia.com/gpu=GPU-a',
      '--device',
      'nvidia.com/gpu=GPU-b',
    ]);
  });
  it("quotes docker's --gpus device list as one CSV field", () => {
    expect(gpuArgs({ name: 'docker' }, { kind: 'nvidia.com/gpu', uuids })).toEqual([
      '--gpus',
      '"device=GPU-a,GPU-b"',
    ]);
  });
  it('uses CDI devices on a docker daemon with CDI', () => {
    expect(
      gpuArgs({ name: 'docker', gpuDevices: 'cdi' }, { kind: 'nvidia.com/gpu', uuids: ['GPU-a'] }),
    ).toEqual(['--device', 'nvidia.com/gpu=GPU-a']);
  });
  it('adds nothing without GPUs', () => {
    expect(gpuArgs({ name: 'podman' }, undefined)).toEqual([]);
    expect(gpuArgs({ name: 'docker' }, { kind: 'k', uuids: [] })).toEqual([]);
  });
});

describe('CDI specs and the toolkit', () => {
  it('knows which cdiVersion a podman reads', () => {
    expect(cdiVersionReadBy('4.0.2')).toBe('0.0.0');
    expect(cdiVersionReadBy('4.3.1')).toBe('0.5.0');
    expect(cdiVersionReadBy('5.4.0')).toBeUndefined();
    expect(compareVersions('1.17.8', '1.17.10')).toBeLessThan(0);
  });

  it('flags toolkit versions with known escapes', () => {
    expect(toolkitOpenCves('1.16.1')).toEqual(['CVE-2024-0132', 'CVE-2025-23266']);
    expect(toolkitOpenCves('1.17.7')).toEqual(['CVE-2025-23266']);
    expect(toolkitOpenCves('1.17.8')).toEqual([]);
  });

  it('reads JSON and YAML specs of the kind asked for, and reports broken ones', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cw-cdi-'));
    try {
      await writeFile(
        join(dir, 'a.yaml'),
        [
          'cdiVersion: "0.7.0"',
          'kind: nvidia.com/gpu',
          'devices:',
          '  - name: "0"',
          '    containerEdits:',
          '      deviceNodes: [{path: /dev/nvidia0}]',
          'containerEdits:',
          '  additionalGids: [44]',
          '  mounts: [{hostPath: /nonexistent/libcuda.so.1, containerPath: /lib/libcuda.so.1}]',
          '  hooks: [{hookName: createContainer, path: /usr/bin/nvidia-cdi-hook}]',
        ].join('\n'),
      );
      await writeFile(join(dir, 'b.json'), '{"kind": "other.com/gpu", "cdiVersion": "0.5.0"}');
      await writeFile(join(dir, 'c.json'), '{ not json');
      // A file gone between the listing and the read (a spec being regenerated, another
      // worker's test spec) is not there, not broken.
      await symlink(join(dir, 'gone.json'), join(dir, 'd.json'));
      const found = await findCdiSpecs('nvidia.com/gpu', [dir]);
      expect(found.map((f) => [f.file.slice(dir.length + 1), f.error ? 'error' : 'spec'])).toEqual([
        ['a.yaml', 'spec'],
        ['c.json', 'error'],
      ]);
      const spec = found[0]?.spec;
      if (!spec) throw new Error('no spec');
      expect(usesAdditionalGids(spec)).toBe(true);
      expect(hookNames(spec)).toEqual(['createContainer /usr/bin/nvidia-cdi-hook']);
      expect(await missingHostFiles(spec, gpus.slice(0, 1))).toEqual([
        '/nonexistent/libcuda.so.1',
        '/dev/nvidia0',
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
