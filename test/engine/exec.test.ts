import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tarFromFiles } from '../../src/archive/safe-tar.js';
import { createEngine } from '../../src/container-engine.js';
import { execEngine, execEngineRaw, hintFor } from '../../src/engine/exec.js';
import { WorkerError } from '../../src/errors.js';

const cli = {
  name: 'podman' as const,
  path: fileURLToPath(new URL('./fixtures/fake-engine.sh', import.meta.url)),
};

async function failure(promise: Promise<unknown>): Promise<WorkerError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(WorkerError);
  return error as WorkerError;
}

describe('execEngine', () => {
  it('returns stdout, fed from a stream on stdin', async () => {
    const out = await execEngine(cli, ['echo-stdin'], {
      timeoutMs: 10_000,
      input: Readable.from(['a', 'b']),
    });
    expect(out).toBe('ab');
  });

  it('survives a CLI that stops reading a streamed archive: the engine says why, the worker lives on', async () => {
    // As `volume import` on a full volume: the pipe breaks while a file entry is open. An
    // EPIPE nobody listened for would end the whole worker (vitest fails on it).
    async function* megabytes() {
      for (let i = 0; i < 64; i++) yield Buffer.alloc(1 << 20);
    }
    for (let round = 0; round < 3; round++) {
      const input = tarFromFiles([{ name: 'weights', size: 64 << 20, stream: megabytes() }], {
        uid: 1000,
        gid: 1000,
      });
      const result = await execEngineRaw(cli, ['short-read', String(2 << 20)], {
        timeoutMs: 20_000,
        input,
      });
      expect(result.exitCode).toBe(125);
      expect(result.outputTail).toContain('no space left on device');
    }
  });

  it('sends every call to --engine-host: podman --remote --url, docker -H, before the command', async () => {
    const url = 'unix:///run/podman/podman.sock';
    const podman = await execEngine({ ...cli, engineHost: url }, ['ps', '--all'], {
      timeoutMs: 10_000,
    });
    expect(podman.trim().split('\n')).toEqual(['--remote', '--url', url, 'ps', '--all']);
    const docker = await execEngine({ ...cli, name: 'docker', engineHost: url }, ['ps'], {
      timeoutMs: 10_000,
    });
    expect(docker.trim().split('\n')).toEqual(['-H', url, 'ps']);
  });

  it('turns crun on hybrid cgroups into a retryable engine failure that names the fix', async () => {
    const error = await failure(execEngine(cli, ['hybrid'], { timeoutMs: 10_000 }));
    expect(error).toMatchObject({ code: 'ENGINE_FAILED', retryable: true });
    expect(error.detail).toContain('cgroups in hybrid mode not supported');
    expect(error.hint).toContain('--oci-runtime runc');
  });

  it('names the ulimit fix for setrlimit failures', async () => {
    const error = await failure(execEngine(cli, ['rlimit'], { timeoutMs: 10_000 }));
    expect(error.hint).toMatch(/ulimit/);
  });

  it('kills a call at its timeout', async () => {
    const started = Date.now();
    const error = await failure(execEngine(cli, ['sleep', '30'], { timeoutMs: 300 }));
    expect(error).toMatchObject({ code: 'ENGINE_FAILED', retryable: true });
    expect(error.message).toMatch(/did not finish within 300 ms/);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('stops a call when its signal aborts', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const error = await failure(
      execEngine(cli, ['sleep', '30'], { timeoutMs: 60_000, signal: controller.signal }),
    );
    expect(error.code).toBe('CANCELLED');
  });

  it('caps what it keeps of stdout and of stderr', async () => {
    const error = await failure(
      execEngine(cli, ['big', '100000'], { timeoutMs: 10_000, maxStdoutBytes: 1000 }),
    );
    expect(error.message).toMatch(/more than 1000 bytes/);
    const noisy = await failure(execEngine(cli, ['noisy'], { timeoutMs: 10_000, tailLines: 20 }));
    expect(noisy.detail?.split('\n').length).toBeLessThanOrEqual(20);
    expect(noisy.detail).toContain('noise line 4999');
  });

  it('has no hint for failures it does not know', () => {
    expect(hintFor('Error: something else')).toBeUndefined();
  });
});

describe('createEngine', () => {
  it('says plainly when there is no engine CLI, with a hint', async () => {
    const error = await failure(
      createEngine({
        enginePath: '/nonexistent/podman',
        buildTimeoutMs: 1000,
        callTimeoutMs: 1000,
      }),
    );
    expect(error.code).toBe('ENGINE_NOT_FOUND');
    expect(error.hint).toMatch(/install podman/);
  });
});
