import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { EngineContext } from '../../src/engine/context.js';
import { imageExists } from '../../src/engine/images.js';
import type { EngineInfo } from '../../src/engine/types.js';
import { WorkerError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'cw-image-exists-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An engine CLI stand-in that answers every call with this output and exit code. */
function engine(name: 'podman' | 'docker', exitCode: number, stderr: string): EngineContext {
  const path = join(dir, `${name}-${exitCode}-${Math.random().toString(16).slice(2)}`);
  writeFileSync(path, `#!/bin/sh\necho '${stderr}' >&2\nexit ${exitCode}\n`);
  chmodSync(path, 0o755);
  const info = { name, path } as EngineInfo;
  return { cli: { name, path }, info, options: { callTimeoutMs: 10_000 } } as EngineContext;
}

const call = { timeoutMs: 10_000 };

describe('whether an image is there', () => {
  it.each([
    ['podman', 1, ''],
    ['docker', 1, 'Error response from daemon: No such image: localhost/x:1'],
  ] as const)('%s: a missing image is not there (exit %i)', async (name, code, stderr) => {
    expect(await imageExists(engine(name, code, stderr), 'localhost/x:1', call)).toBe(false);
  });

  it.each([
    ['podman', 125, 'Error: database is locked'],
    ['docker', 1, 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock'],
  ] as const)(
    '%s: an engine that cannot answer is an engine failure, not a missing image',
    async (name, code, stderr) => {
      const asked = imageExists(engine(name, code, stderr), 'localhost/x:1', call);
      await expect(asked).rejects.toBeInstanceOf(WorkerError);
      await expect(asked).rejects.toMatchObject({ code: 'ENGINE_FAILED', retryable: true });
    },
  );
});
