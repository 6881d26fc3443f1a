import { describe, expect, it } from 'vitest';
import {
  buildArgs,
  containerListArgs,
  copyInArgs,
  copyOutArgs,
  createArgs,
  imageExistsArgs,
  imageListArgs,
  imageVolumesArgs,
  killArgs,
  limitArgs,
  pruneImagesArgs,
  removeContainersArgs,
  removeImageArgs,
  removeUnusedImageArgs,
  volumeCreateArgs,
  volumeImportArgs,
  waitArgs,
} from '../../src/engine/args.js';
import { unenforcedLimits } from '../../src/engine/detect.js';
import { LABEL_MANAGED } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { RunSpec } from '../../src/engine/types.js';

const podman = { name: 'podman' as const, unenforcedLimits: [] };
const docker = { name: 'docker' as const, unenforcedLimits: [] };
const rootlessV1 = {
  name: 'podman' as const,
  unenforcedLimits: unenforcedLimits({ name: 'podman', rootless: true, cgroupVersion: 1 }),
};

const spec: RunSpec = {
  image: 'localhost/compute-worker/submission:abc',
  command: ['-T', 'train', '-V', '/data'],
  mounts: [
    { volume: 'vol-train', target: '/data/train' },
    { volume: 'vol-model', target: '/data/model', readOnly: true },
  ],
  labels: { 'compute-worker.task': 't1' },
  limits: DEFAULT_LIMITS,
  timeoutMs: 90_500,
  logTailLines: 100,
  logTailBytes: 65536,
};

/** The value following a flag, e.g. flagValue(args, '--memory') -> '4g'. */
const flagValue = (args: string[], flag: string) => args[args.indexOf(flag) + 1];
const flagValues = (args: string[], flag: string) =>
  args.flatMap((a, i) => (a === flag ? [args[i + 1]] : []));

/** Limits whose every value differs from the engines' defaults, so each flag shows. */
const LIMITS = {
  memoryBytes: 4 * 1024 ** 3,
  cpus: 2,
  pidsLimit: 256,
  tmpfsBytes: 1024 ** 3,
  shmBytes: 512 * 1024 ** 2,
  user: '1000:1000',
  nofile: 1024,
  nproc: 1024,
};

/** Every hardening flag, exactly: an added flag (--privileged, --cap-add, ...) fails these. */
const HARDENING = [
  '--network=none',
  '--cap-drop=ALL',
  '--security-opt',
  'no-new-privileges',
  '--read-only',
  '--tmpfs',
  '/tmp:rw,nosuid,nodev,size=1g,mode=1777',
  '--user',
  '1000:1000',
  '--ulimit',
  'nofile=1024:1024',
  '--ulimit',
  'nproc=1024:1024',
  '--ulimit',
  'core=0:0',
  '--shm-size',
  '512m',
  '--init',
];
const CGROUP_LIMITS = [
  '--pids-limit',
  '256',
  '--memory',
  '4g',
  '--memory-swap',
  '4g',
  '--cpus',
  '2',
];

describe('the exact arguments of a task container', () => {
  it('podman, rootful', () => {
    expect(limitArgs(podman, LIMITS)).toEqual([
      ...HARDENING,
      '--read-only-tmpfs=false',
      '--http-proxy=false',
      ...CGROUP_LIMITS,
    ]);
    expect(
      createArgs({ ...podman, ociRuntimeOverride: 'runc' }, 'cw-run-1', {
        ...spec,
        limits: LIMITS,
      }),
    ).toEqual([
      'create',
      '--name',
      'cw-run-1',
      '--runtime',
      'runc',
      ...HARDENING,
      '--read-only-tmpfs=false',
      '--http-proxy=false',
      ...CGROUP_LIMITS,
      '--log-opt',
      'max-size=64m',
      '--timeout',
      '121',
      '--image-volume=tmpfs',
      '--label',
      'compute-worker.task=t1',
      '--label',
      `${LABEL_MANAGED}=true`,
      '-v',
      'vol-train:/data/train',
      '-v',
      'vol-model:/data/model:ro',
      'localhost/compute-worker/submission:abc',
      '-T',
      'train',
      '-V',
      '/data',
    ]);
  });

  it('podman, rootless on cgroup v1: no cgroup limits, the rest unchanged', () => {
    expect(limitArgs(rootlessV1, LIMITS)).toEqual([
      ...HARDENING,
      '--read-only-tmpfs=false',
      '--http-proxy=false',
    ]);
    expect(createArgs(rootlessV1, 'n', { ...spec, limits: LIMITS })).toEqual([
      'create',
      '--name',
      'n',
      ...HARDENING,
      '--read-only-tmpfs=false',
      '--http-proxy=false',
      '--log-opt',
      'max-size=64m',
      '--timeout',
      '121',
      '--image-volume=tmpfs',
      '--label',
      'compute-worker.task=t1',
      '--label',
      `${LABEL_MANAGED}=true`,
      '-v',
      'vol-train:/data/train',
      '-v',
      'vol-model:/data/model:ro',
      'localhost/compute-worker/submission:abc',
      '-T',
      'train',
      '-V',
      '/data',
    ]);
  });

  it('docker: no conmon deadline, no podman-only flag', () => {
    expect(limitArgs(docker, LIMITS)).toEqual([...HARDENING, ...CGROUP_LIMITS]);
    expect(createArgs(docker, 'n', { ...spec, limits: LIMITS })).toEqual([
      'create',
      '--name',
      'n',
      ...HARDENING,
      ...CGROUP_LIMITS,
      '--log-opt',
      'max-size=64m',
      '--label',
      'compute-worker.task=t1',
      '--label',
      `${LABEL_MANAGED}=true`,
      '-v',
      'vol-train:/data/train',
      '-v',
      'vol-model:/data/model:ro',
      'localhost/compute-worker/submission:abc',
      '-T',
      'train',
      '-V',
      '/data',
    ]);
  });
});

describe('limitArgs', () => {
  it('sets every resource limit with finite values, swap equal to memory', () => {
    const args = limitArgs(docker, DEFAULT_LIMITS);
    expect(flagValue(args, '--memory')).toBe('4g');
    expect(flagValue(args, '--memory-swap')).toBe('4g');
    expect(flagValue(args, '--pids-limit')).toBe('256');
    expect(flagValue(args, '--shm-size')).toBe('1g');
    expect(Number(flagValue(args, '--cpus'))).toBeGreaterThan(0);
    expect(flagValues(args, '--ulimit')).toEqual([
      'nofile=1024:1024',
      'nproc=1024:1024',
      'core=0:0',
    ]);
  });

  it('turns off podman read-only extra tmpfs mounts, which have no size; docker has none', () => {
    expect(limitArgs(podman, DEFAULT_LIMITS)).toContain('--read-only-tmpfs=false');
    expect(limitArgs(docker, DEFAULT_LIMITS)).not.toContain('--read-only-tmpfs=false');
  });

  it('leaves out the cgroup limits rootless podman on cgroup v1 cannot apply, and keeps the ulimits', () => {
    expect(rootlessV1.unenforcedLimits).toEqual(['memory', 'cpus', 'pids']);
    const args = limitArgs(rootlessV1, DEFAULT_LIMITS);
    for (const flag of ['--memory', '--memory-swap', '--cpus', '--pids-limit'])
      expect(args).not.toContain(flag);
    expect(flagValues(args, '--ulimit')).toHaveLength(3);
    expect(unenforcedLimits({ name: 'podman', rootless: false, cgroupVersion: 1 })).toEqual([]);
    const rootlessV2 = { name: 'podman' as const, rootless: true, cgroupVersion: 2 as const };
    expect(unenforcedLimits(rootlessV2, ['cpu', 'memory', 'pids'])).toEqual([]);
    expect(unenforcedLimits(rootlessV2, ['memory', 'pids'])).toEqual(['cpus']);
    expect(unenforcedLimits({ ...rootlessV2, name: 'docker' })).toEqual([]);
    expect(unenforcedLimits({ ...rootlessV2, name: 'docker', cgroupVersion: 1 })).toHaveLength(3);
  });

  it('writes sizes that are not whole units in bytes', () => {
    const args = limitArgs(docker, { ...DEFAULT_LIMITS, memoryBytes: 1_500_000_001 });
    expect(flagValue(args, '--memory')).toBe('1500000001');
  });
});

describe('createArgs', () => {
  it('creates a named, labelled container with its mounts, image and command last', () => {
    const args = createArgs(podman, 'cw-run-1', spec);
    expect(args.slice(0, 3)).toEqual(['create', '--name', 'cw-run-1']);
    expect(args.slice(-5)).toEqual([spec.image, '-T', 'train', '-V', '/data']);
    expect(flagValues(args, '--label')).toEqual([
      'compute-worker.task=t1',
      `${LABEL_MANAGED}=true`,
    ]);
    expect(flagValues(args, '-v')).toEqual(['vol-train:/data/train', 'vol-model:/data/model:ro']);
  });

  it("gives podman's conmon its own deadline after the worker's, as a backstop; docker has none", () => {
    expect(flagValue(createArgs(podman, 'n', spec), '--timeout')).toBe(String(91 + 30));
    expect(createArgs(docker, 'n', spec)).not.toContain('--timeout');
  });

  it('passes --runtime only when an OCI runtime was chosen', () => {
    expect(createArgs(podman, 'n', spec)).not.toContain('--runtime');
    expect(
      flagValue(createArgs({ ...podman, ociRuntimeOverride: 'runc' }, 'n', spec), '--runtime'),
    ).toBe('runc');
  });

  it('puts extra caller flags before the image, never after it', () => {
    const args = createArgs(docker, 'n', { ...spec, extraArgs: ['--gpus', 'all'] });
    expect(args.indexOf('--gpus')).toBeLessThan(args.indexOf(spec.image));
  });
});

describe('buildArgs', () => {
  const input = {
    tag: 'localhost/compute-worker/workflow:d1',
    contextDir: '/tmp/ctx',
    containerfile: '/tmp/ctx/Dockerfile',
    labels: { a: 'b' },
  };

  it('podman builds without network and never pulls', () => {
    const args = buildArgs({ ...podman, ociRuntimeOverride: 'runc' }, input);
    expect(args[0]).toBe('build');
    expect(args).toEqual(expect.arrayContaining(['--network=none', '--pull=never', '--force-rm']));
    expect(flagValue(args, '--runtime')).toBe('runc');
    expect(flagValue(args, '--tag')).toBe(input.tag);
    expect(args.at(-1)).toBe('/tmp/ctx');
  });

  it('docker builds without network, from the named file', () => {
    const args = buildArgs(docker, input);
    expect(flagValue(args, '--network')).toBe('none');
    expect(flagValue(args, '--file')).toBe('/tmp/ctx/Dockerfile');
    expect(args.some((a) => a.startsWith('--pull'))).toBe(false);
    expect(flagValues(args, '--label')).toEqual(['a=b', `${LABEL_MANAGED}=true`]);
  });

  const idMaps = { uid: { start: 2000000000, count: 65536 }, gid: { start: 3000, count: 10 } };

  it('confines an untrusted podman build: exactly these flags, in this order', () => {
    const args = buildArgs(
      { ...podman, ociRuntimeOverride: 'runc' },
      { ...input, isolation: { mark: 'm1', idMaps, cgroupParent: '/cw/b1/limited/run' } },
    );
    expect(args).toEqual([
      'build',
      '--network=none',
      '--pull=never',
      '--http-proxy=false',
      '--runtime',
      'runc',
      '--tag',
      input.tag,
      '--force-rm',
      '--label',
      'a=b',
      '--label',
      `${LABEL_MANAGED}=true`,
      '--build-arg',
      'COMPUTE_WORKER_BUILD=m1',
      '--cgroup-parent',
      '/cw/b1/limited/run',
      '--layers=false',
      '--cap-drop',
      'ALL',
      '--cap-add',
      'CHOWN,DAC_OVERRIDE,FOWNER,FSETID,KILL,SETGID,SETUID',
      '--userns-uid-map',
      '0:2000000000:65536',
      '--userns-gid-map',
      '0:3000:10',
      '--file',
      '/tmp/ctx/Dockerfile',
      '/tmp/ctx',
    ]);
  });

  it('passes memory and CPU limits as flags where no cgroup of the worker carries them', () => {
    const limits = { memoryBytes: 512 * 1024 ** 2, cpus: 1.5 };
    for (const info of [podman, docker]) {
      const args = buildArgs(info, { ...input, isolation: { mark: 'm2', limits } });
      expect(flagValue(args, '--memory')).toBe('512m');
      expect(flagValue(args, '--memory-swap')).toBe('512m');
      expect(flagValue(args, '--cpu-period')).toBe('100000');
      expect(flagValue(args, '--cpu-quota')).toBe('150000');
      expect(args).not.toContain('--cgroup-parent');
    }
    // docker's build has neither capability nor id-map flags.
    const dockerArgs = buildArgs(docker, { ...input, isolation: { mark: 'm2', idMaps, limits } });
    expect(dockerArgs.some((a) => /cap-|userns|layers/.test(a))).toBe(false);
    expect(dockerArgs.slice(-3)).toEqual(['--file', input.containerfile, input.contextDir]);
  });

  it('leaves a trusted build (the workflow) as it was', () => {
    const args = buildArgs(podman, input);
    expect(args.some((a) => /cap-|userns|cgroup|memory|build-arg|layers/.test(a))).toBe(false);
  });
});

describe('volume and lookup arguments', () => {
  it('creates labelled volumes and imports from stdin', () => {
    expect(volumeCreateArgs('v1', { t: '1' })).toEqual([
      'volume',
      'create',
      '--label',
      't=1',
      '--label',
      `${LABEL_MANAGED}=true`,
      'v1',
    ]);
    expect(volumeImportArgs('v1')).toEqual(['volume', 'import', 'v1', '-']);
  });

  it('copies through the helper container, keeping owners on the way in', () => {
    expect(copyInArgs('h1')).toEqual(['cp', '--archive', '-', 'h1:/mnt']);
    // podman's --archive means the opposite: owners become the container's user.
    expect(copyInArgs('h1', 'podman')).toEqual(['cp', '--archive=false', '-', 'h1:/mnt']);
    expect(copyOutArgs('h1')).toEqual(['cp', 'h1:/mnt/.', '-']);
  });

  it('checks an image cheaply: podman image exists, docker image inspect', () => {
    expect(imageExistsArgs(podman, 'i')).toEqual(['image', 'exists', 'i']);
    expect(imageExistsArgs(docker, 'i').slice(0, 2)).toEqual(['image', 'inspect']);
  });

  it("reads an image's declared volumes and removes an image", () => {
    expect(imageVolumesArgs('i')).toEqual([
      'image',
      'inspect',
      '--format',
      '{{json .Config.Volumes}}',
      'i',
    ]);
    expect(removeImageArgs('i')).toEqual(['rmi', '--force', 'i']);
  });

  it('lists containers by every label', () => {
    expect(containerListArgs({ a: '1', b: '2' })).toEqual([
      'ps',
      '--all',
      '--quiet',
      '--no-trunc',
      '--filter',
      'label=a=1',
      '--filter',
      'label=b=2',
    ]);
  });
});

describe('image VOLUMEs', () => {
  it('podman backs them with a tmpfs; docker cannot, so removal takes anonymous volumes too', () => {
    expect(createArgs(podman, 'n', spec)).toContain('--image-volume=tmpfs');
    expect(createArgs(docker, 'n', spec)).not.toContain('--image-volume=tmpfs');
    expect(removeContainersArgs(['a', 'b'])).toEqual(['rm', '--force', '--volumes', 'a', 'b']);
    expect(killArgs('cw-run-1')).toEqual(['kill', 'cw-run-1']);
    expect(waitArgs('cw-run-1')).toEqual(['wait', 'cw-run-1']);
  });
});

describe('image cache arguments', () => {
  const label = { 'compute-worker.built-by': 'w1' };

  it('lists and prunes by the one label, never every image', () => {
    expect(imageListArgs(label)).toEqual([
      'images',
      '--quiet',
      '--no-trunc',
      '--filter',
      'label=compute-worker.built-by=w1',
    ]);
    expect(pruneImagesArgs(label)).toEqual([
      'image',
      'prune',
      '--force',
      '--filter',
      'label=compute-worker.built-by=w1',
    ]);
  });

  it('removes an image without --force, so that the engine refuses one a container uses', () => {
    expect(removeUnusedImageArgs('localhost/compute-worker/submission:abc')).toEqual([
      'rmi',
      'localhost/compute-worker/submission:abc',
    ]);
  });
});
