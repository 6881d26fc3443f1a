import { describe, expect, it } from 'vitest';
import type { EngineContext } from '../../src/engine/context.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import { runEnding } from '../../src/engine/run-ending.js';
import { startFailure } from '../../src/engine/start-failure.js';

// The image's own faults are proven against real podman in test/tasks/context-blame.test.ts;
// here, the engine's words for the host's own trouble, which no real host here produces on
// demand, stay the worker's fault.
const ctx = { cli: { name: 'podman', path: 'podman' } } as EngineContext;
const runc = 'Error: OCI runtime error: unable to start container 0f3c: runc: runc create failed:';

describe('a start the engine refused for the host', () => {
  it.each([
    [
      'a full store',
      `${runc} unable to start container process: error during container init: error mounting "tmpfs" to rootfs at "/tmp": mount tmpfs:/tmp (via /proc/self/fd/18): no space left on device`,
    ],
    [
      'a read-only cgroup tree',
      `${runc} unable to start container process: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/compute-worker-run/w-1: read-only file system`,
    ],
    [
      'a cgroup limit the kernel refuses',
      `${runc} unable to start container process: error during container init: error setting cgroup config for procHooks process: failed to write "67108864": write /sys/fs/cgroup/memory/x/memory.limit_in_bytes: device or resource busy`,
    ],
    [
      "the host's ulimits",
      `${runc} unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 7: operation not permitted: OCI permission denied`,
    ],
  ])('%s is ENGINE_FAILED, retried', (_what, stderr) => {
    const error = startFailure(ctx, stderr, 125, ['/data/model']);
    expect(error.code).toBe('ENGINE_FAILED');
    expect(error.retryable).toBe(true);
  });
});

describe('why a container died by a signal', () => {
  const podman = { name: 'podman', cgroupVersion: 1 } as const;
  const docker = { name: 'docker', cgroupVersion: 1 } as const;
  const limited = { limits: DEFAULT_LIMITS };
  const OOM = { oomKilled: true, killedFromOutside: false };
  const OUTSIDE = { oomKilled: false, killedFromOutside: true };
  const NEITHER = { oomKilled: false, killedFromOutside: false };

  it.each([
    ['conmon recorded an OOM', podman, { ExitCode: 137 }, true, false, OOM],
    ['conmon watched and saw none', podman, { ExitCode: 137 }, false, false, OUTSIDE],
    [
      "docker's flag says no OOM",
      docker,
      { ExitCode: 137, OOMKilled: false },
      undefined,
      false,
      OUTSIDE,
    ],
    ["docker's flag says OOM", docker, { ExitCode: 137, OOMKilled: true }, undefined, false, OOM],
    ['a SIGTERM', docker, { ExitCode: 143 }, undefined, false, OUTSIDE],
    ['the worker killed it', podman, { ExitCode: 137 }, false, true, NEITHER],
    ['it exited by itself', podman, { ExitCode: 3 }, false, false, NEITHER],
    // podman on cgroup v1 without conmon's file (remote): its flag is always false.
    ['nothing recorded it on podman v1', podman, { ExitCode: 137 }, undefined, false, OOM],
  ] as const)('%s', (_what, info, state, oomSeen, byWorker, ending) => {
    expect(runEnding(info, limited, state, oomSeen, byWorker)).toEqual(ending);
  });
});
