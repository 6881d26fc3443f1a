import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireEngines, VARIANTS } from '../support/engine-variants.js';
import { closedPort } from '../support/http-stand-in.js';
import { startOrchestratorServer } from '../support/orchestrator-server.js';
import { PODMAN, type PodmanService, startPodmanService } from '../support/podman-service.js';
import { startStorageServer } from '../support/storage-server.js';
import { exampleContext, exampleData, newIds } from '../support/task-fixtures.js';

// The worker's own image, made without a registry (scripts/build-image.sh: a base of this
// host's node and podman client), run by the host's rootful podman as its non-root user,
// driving a podman service through the socket mounted into it: doctor passes, and a learn
// task is done. The service keeps a storage of its own, so what the worker did is seen there.

const script = fileURLToPath(new URL('../../scripts/build-image.sh', import.meta.url));
const built = fileURLToPath(new URL('../../dist/commands/run.js', import.meta.url));
const why = VARIANTS['podman-remote'].unavailable();
const IMAGE = 'localhost/compute-worker:test';
/** The socket's group: the container gets it, nobody else on the host has it. */
const SOCKET_GID = 47_000 + (process.pid % 1000);
const label = `cw.test.worker-image=${randomBytes(4).toString('hex')}`;
const SOCKET_IN = '/run/podman/podman.sock';
/** runc (crun fails on the CI host's hybrid cgroups); ulimits under the host's hard limits. */
const RUN = [
  '--runtime',
  'runc',
  'run',
  '--rm',
  '--label',
  label,
  '--ulimit',
  'nofile=4096:4096',
  '--ulimit',
  'nproc=4096:4096',
];

describe.skipIf(why !== undefined && !requireEngines)(
  "the worker's own image",
  { timeout: 600_000 },
  () => {
    let service: PodmanService;

    beforeAll(async () => {
      service = await startPodmanService();
      const socket = service.url.slice('unix://'.length);
      chownSync(socket, 0, SOCKET_GID);
      chmodSync(socket, 0o660);
      // Once per run, from dist/ as `npm test` built it; the base is made once per host.
      await execa('bash', [script, ...(existsSync(built) ? ['--no-build'] : [])], {
        env: { TAG: IMAGE, PODMAN_ARGS: '--runtime runc' },
        stderr: 'inherit',
      });
    }, 600_000);

    afterAll(async () => {
      const left = await execa(PODMAN, ['ps', '-aq', '--filter', `label=${label}`]);
      const ids = left.stdout.split('\n').filter(Boolean);
      if (ids.length) await execa(PODMAN, ['rm', '-f', ...ids]);
      await service?.stop();
    });

    /** The service's socket mounted in, reachable by the socket's group alone. */
    const socketArgs = () => [
      // The stand-ins listen on 127.0.0.1 of this host.
      '--network',
      'host',
      '--group-add',
      String(SOCKET_GID),
      '-v',
      `${service.url.slice('unix://'.length)}:${SOCKET_IN}`,
      '-e',
      `CONTAINER_HOST=unix://${SOCKET_IN}`,
    ];

    /** `compute-worker ARGS` in the image, as its own user, the service's socket mounted in. */
    function worker(args: string[], input?: string) {
      return execa(PODMAN, [...RUN, '-i', ...socketArgs(), IMAGE, ...args], {
        reject: false,
        ...(input !== undefined ? { input } : {}),
      });
    }

    it('runs as a non-root user, with production dependencies only', async () => {
      const user = await execa(PODMAN, [...RUN, '--entrypoint', 'id', IMAGE]);
      expect(user.stdout).toMatch(/^uid=1000\b.*gid=1000\b/);
      const modules = await execa(PODMAN, [
        ...RUN,
        '--entrypoint',
        'ls',
        IMAGE,
        '/app/node_modules',
      ]);
      const names = modules.stdout.split(/\s+/);
      expect(names).toEqual(expect.arrayContaining(['execa', 'zod', 'tar-stream', '@oclif']));
      for (const dev of ['vitest', 'typescript', '@biomejs', 'parse-prometheus-text-format']) {
        expect(names).not.toContain(dev);
      }
    });

    it('keeps its id in the named volume when re-created, and answers its health check', async () => {
      const manifest = await execa(PODMAN, [
        ...RUN,
        '--entrypoint',
        'ls',
        IMAGE,
        '/app/oclif.manifest.json',
      ]);
      expect(manifest.exitCode).toBe(0);
      const volume = `cw-test-state-${randomBytes(4).toString('hex')}`;
      const metrics = `127.0.0.1:${await closedPort()}`;
      const nsqd = `127.0.0.1:${await closedPort()}`;
      const names = [1, 2].map((n) => `cw-test-worker-${randomBytes(4).toString('hex')}-${n}`);
      // The README's recipe: a named volume on the state folder, a stop timeout above
      // the shutdown grace, the metrics address (and so the health check) from the environment.
      const start = (name: string) =>
        execa(PODMAN, [
          ...RUN.filter((arg) => arg !== '--rm'),
          '-d',
          '--name',
          name,
          '--stop-timeout',
          '60',
          ...socketArgs(),
          '-v',
          `${volume}:/var/lib/compute-worker`,
          '-e',
          `COMPUTE_WORKER_METRICS_ADDRESS=${metrics}`,
          IMAGE,
          'run',
          '--nsqd-tcp-addresses',
          nsqd,
          '--log-format',
          'json',
        ]);
      /** The worker id its 'worker started' line names. */
      const startedAs = async (name: string): Promise<string> => {
        const deadline = Date.now() + 120_000;
        for (;;) {
          const logs = await execa(PODMAN, ['logs', name], { reject: false });
          const line = `${logs.stdout}\n${logs.stderr}`
            .split('\n')
            .find((l) => l.includes('"worker started"'));
          if (line) return (JSON.parse(line) as { worker: string }).worker;
          if (Date.now() > deadline) throw new Error(`${name} did not start:\n${logs.stderr}`);
          await new Promise((r) => setTimeout(r, 500));
        }
      };
      try {
        await start(names[0] as string);
        const first = await startedAs(names[0] as string);
        const health = await execa(PODMAN, ['healthcheck', 'run', names[0] as string], {
          reject: false,
        });
        expect(health.exitCode, `${health.stdout}${health.stderr}`).toBe(0);
        const stopped = await execa(PODMAN, ['stop', names[0] as string]);
        expect(stopped.exitCode).toBe(0);
        const exit = await execa(PODMAN, [
          'inspect',
          '--format',
          '{{.State.ExitCode}}',
          names[0] as string,
        ]);
        // SIGTERM drained it: it exited by itself, not killed at the stop timeout (137).
        expect(exit.stdout.trim()).toBe('0');
        await execa(PODMAN, ['rm', names[0] as string]);
        await start(names[1] as string);
        expect(await startedAs(names[1] as string)).toBe(first);
      } finally {
        await execa(PODMAN, ['rm', '-f', '-t', '0', ...names], { reject: false });
        await execa(PODMAN, ['volume', 'rm', '-f', volume], { reject: false });
      }
    });

    it('passes doctor against the socket, naming the remote engine', async () => {
      const doctor = await worker(['doctor', '--json', '--state-dir', '/tmp/state']);
      const report = JSON.parse(doctor.stdout) as {
        ready: boolean;
        checks: { name: string; status: string; message: string }[];
      };
      expect(
        report.checks.filter((c) => c.status === 'fail'),
        doctor.stderr,
      ).toEqual([]);
      expect(report.ready).toBe(true);
      expect(doctor.exitCode).toBe(0);
      const engine = report.checks.find((c) => c.name === 'engine');
      expect(engine?.message).toContain(`at unix://${SOCKET_IN}`);
      expect(report.checks.find((c) => c.name === 'remote-engine')?.status).toBe('warn');
      // The probe image was built by the service, into its own storage.
      const images = await execa(PODMAN, [
        ...service.storageArgs,
        'images',
        '--format',
        '{{.Repository}}',
      ]);
      expect(images.stdout.split('\n')).toContain('localhost/compute-worker/probe');
    });

    it('runs a learn task through the socket and reports it done', async () => {
      const storage = await startStorageServer({ password: 'p' });
      const orchestrator = await startOrchestratorServer({ password: 'p' });
      try {
        const ids = newIds('workflow', 'algo', 'train', 'test', 'uuid', 'model_end');
        storage.seed('problem', ids.workflow, { blob: await exampleContext('problem') });
        storage.seed('algo', ids.algo, { blob: await exampleContext('submission') });
        storage.seed('data', ids.train, { blob: await exampleData('train-1.csv') });
        storage.seed('data', ids.test, { blob: await exampleData('test.csv') });
        orchestrator.addTask('learnuplet', ids.uuid, 'pending');
        const task = {
          uuid: ids.uuid,
          model_end: ids.model_end,
          problem: ids.workflow,
          workflow: ids.workflow,
          algo: ids.algo,
          train_data: [ids.train],
          test_data: [ids.test],
          model_start: null,
          rank: 0,
          worker: null,
          status: 'todo',
          timestamp_creation: 1510000000,
        };
        const service_ = (server: { host: string; port: number }, name: string) => [
          `--${name}-host`,
          `http://${server.host}`,
          `--${name}-port`,
          String(server.port),
          `--${name}-user`,
          'u',
          `--${name}-password`,
          'p',
        ];
        const logFrom = service.log().length;
        const run = await worker(
          [
            'task',
            'exec',
            '-',
            '--json',
            '--state-dir',
            '/tmp/state',
            ...service_(storage, 'storage'),
            ...service_(orchestrator, 'orchestrator'),
          ],
          JSON.stringify(task),
        );
        const result = JSON.parse(run.stdout) as { status: string };
        expect(result.status, run.stderr).toBe('done');
        expect(run.exitCode).toBe(0);
        expect(orchestrator.task(ids.uuid)?.status).toBe('done');
        expect(storage.blob('model', ids.model_end)?.length).toBeGreaterThan(0);
        // It said what a remote engine leaves unenforced, and its engine work was the service's.
        expect(run.stderr).toContain(`remote podman at unix://${SOCKET_IN}: not enforced here`);
        const log = service.log().slice(logFrom);
        expect(log).toMatch(/"POST \/v[\d.]+\/libpod\/build\?/);
        expect(log).toMatch(/"POST \/v[\d.]+\/libpod\/containers\/create /);
      } finally {
        await Promise.all([storage.close(), orchestrator.close()]);
      }
    });
  },
);
