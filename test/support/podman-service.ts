import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

/**
 * A rootful `podman system service` on a unix socket of its own, with a storage of its own
 * (vfs: nothing stays mounted once it stops), so that what the worker does through the
 * socket is seen there and nowhere else: the local podman does not list it. Its log has a
 * line per API request (`--log-level=info`), the other proof that calls went through it.
 */
export interface PodmanService {
  /** unix:///…/podman.sock */
  url: string;
  /** Runs the local podman CLI on the service's storage directly (not through the socket). */
  storageArgs: string[];
  /** The service's output so far: its API access log. */
  log(): string;
  stop(): Promise<void>;
}

export const PODMAN = '/usr/bin/podman';

const DIR = join(tmpdir(), `cw-podman-service-${process.pid}-${randomBytes(3).toString('hex')}`);

/** Where a test file's service lives: one per loaded module, so the variant can name it up front. */
export function serviceDir(): string {
  return DIR;
}

export function serviceUrl(): string {
  return `unix://${join(serviceDir(), 'podman.sock')}`;
}

export async function startPodmanService(): Promise<PodmanService> {
  const dir = serviceDir();
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // A Containerfile in the service's working folder, which a remote build without --file
  // takes instead of the context's: one that cannot build here shows the wrong one was used.
  writeFileSync(join(dir, 'Containerfile'), 'FROM docker.io/library/node:22-bookworm-slim\n');
  const storageArgs = [
    '--root',
    join(dir, 'root'),
    '--runroot',
    join(dir, 'run'),
    '--storage-driver',
    'vfs',
  ];
  const logFile = join(dir, 'service.log');
  const fd = openSync(logFile, 'a');
  // crun cannot run on the CI host's hybrid cgroups: the service's own runtime is runc.
  const child: ChildProcess = spawn(
    PODMAN,
    [
      '--runtime',
      'runc',
      ...storageArgs,
      '--log-level=info',
      'system',
      'service',
      '--time=0',
      serviceUrl(),
    ],
    // Its working folder gets conmon's files; not the repository.
    { cwd: dir, stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Ready once it answers; a service that died says why in its log.
  for (let attempt = 0; ; attempt++) {
    const ping = await execa(PODMAN, ['--remote', '--url', serviceUrl(), 'version'], {
      reject: false,
    });
    if (ping.exitCode === 0) break;
    if (child.exitCode !== null || attempt >= 100) {
      child.kill('SIGKILL');
      throw new Error(`podman system service did not start: ${readFileSync(logFile, 'utf8')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    url: serviceUrl(),
    storageArgs,
    log: () => readFileSync(logFile, 'utf8'),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
