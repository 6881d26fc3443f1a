import { describe, expect, it } from 'vitest';
import { engineHostArgs } from '../../src/engine/args.js';
import {
  redactEngineHost,
  remoteEngineGaps,
  remoteEngineWarning,
  resolveEngineHost,
} from '../../src/engine/remote.js';
import { WorkerError } from '../../src/errors.js';

describe('--engine-host', () => {
  it('puts the remote flags before the command: podman --remote --url, docker -H', () => {
    expect(engineHostArgs('podman', 'unix:///run/podman/podman.sock')).toEqual([
      '--remote',
      '--url',
      'unix:///run/podman/podman.sock',
    ]);
    expect(engineHostArgs('docker', 'tcp://10.0.0.5:2376')).toEqual(['-H', 'tcp://10.0.0.5:2376']);
    expect(engineHostArgs('podman', undefined)).toEqual([]);
  });

  it('takes the flag first, else the variable of the chosen engine only', () => {
    const env = { CONTAINER_HOST: 'unix:///c.sock', DOCKER_HOST: 'unix:///d.sock' };
    expect(resolveEngineHost('podman', 'ssh://u@h/run/p.sock', env)).toBe('ssh://u@h/run/p.sock');
    expect(resolveEngineHost('podman', undefined, env)).toBe('unix:///c.sock');
    expect(resolveEngineHost('docker', undefined, env)).toBe('unix:///d.sock');
    expect(resolveEngineHost('docker', undefined, { CONTAINER_HOST: 'unix:///c.sock' })).toBe(
      undefined,
    );
    expect(resolveEngineHost('podman', undefined, { CONTAINER_HOST: '' })).toBe(undefined);
  });

  it.each([
    ['a path without a scheme', '/run/podman/podman.sock'],
    ['an http URL', 'http://host:8080'],
    ['an option in disguise', '--privileged'],
    ['a control character', 'unix:///run/p.sock\nx'],
  ])('refuses %s, naming where it came from', (_, value) => {
    let error: unknown;
    try {
      resolveEngineHost('podman', undefined, { CONTAINER_HOST: value });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(WorkerError);
    expect(error).toMatchObject({ code: 'CONFIG_INVALID' });
    expect((error as WorkerError).message).toContain('CONTAINER_HOST');
    expect((error as WorkerError).hint).toContain('unix://');
  });

  it('never shows a password of the URL', () => {
    expect(redactEngineHost('ssh://core:s3cret@host:22/run/podman/podman.sock')).toBe(
      'ssh://core:***@host:22/run/podman/podman.sock',
    );
    expect(redactEngineHost('unix:///run/podman/podman.sock')).toBe(
      'unix:///run/podman/podman.sock',
    );
    let error: unknown;
    try {
      resolveEngineHost('docker', 'ftp://u:s3cret@host/x');
    } catch (e) {
      error = e;
    }
    expect(String((error as Error).message)).not.toContain('s3cret');
  });

  it('names what a remote engine leaves unenforced, and nothing for a local one', () => {
    expect(remoteEngineGaps({ name: 'podman' })).toEqual([]);
    expect(remoteEngineWarning({ name: 'docker' })).toBe('');
    const podman = remoteEngineWarning({ name: 'podman', engineHost: 'ssh://u:pw@h/p.sock' });
    expect(podman).toContain('remote podman at ssh://u:***@h/p.sock');
    expect(podman).toMatch(/--disk-limit.*--min-free-disk.*GPUs.*--build-pids-limit/);
    const docker = remoteEngineGaps({ name: 'docker', engineHost: 'tcp://h:2376' });
    expect(docker.join(' ')).not.toContain('--build-pids-limit');
  });
});
