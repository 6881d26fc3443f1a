import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { HttpStorageClient } from '../../src/clients/storage.js';
import { LABEL_STEP, LABEL_TASK } from '../../src/engine/labels.js';
import type { ErrorCode, WorkerError } from '../../src/errors.js';
import type { StepName, TaskEnv } from '../../src/tasks/context.js';
import { faultOf } from '../../src/tasks/outcome.js';
import { busyboxContext } from '../support/busybox-context.js';
import { requireEngines } from '../support/engine-variants.js';
import { closedPort } from '../support/http-stand-in.js';
import {
  doneReports,
  exampleContext,
  exampleData,
  leftovers,
  newIds,
  type Outcome,
  podmanMissing,
  prebuild,
  runTask,
  scriptRunnerContext,
  serviceOptions,
  startWorld,
  type TaskWorld,
  tarGz,
} from '../support/task-fixtures.js';

// Every way a task can fail: each is reported `failed` to the orchestrator with a
// reason naming what was wrong, and leaves no container, volume or temp folder.
// The misbehaving submissions and workflows are one script-running image whose
// scripts come as data (see scriptRunnerContext), so nothing is built per test.

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'failed tasks',
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    // W/A: the example workflow and submission; RW/R: the script runner as each.
    const ids = newIds('W', 'A', 'RW', 'R', 'netHost', 'badBuild', 'train', 'test');

    beforeAll(async () => {
      world = await startWorld();
      const [problem, submission, runner] = await Promise.all([
        exampleContext('problem'),
        exampleContext('submission'),
        scriptRunnerContext(),
      ]);
      world.storage.seed('problem', ids.W, { blob: problem });
      world.storage.seed('algo', ids.A, { blob: submission });
      world.storage.seed('problem', ids.RW, { blob: runner });
      world.storage.seed('algo', ids.R, { blob: runner });
      world.storage.seed('algo', ids.netHost, {
        blob: await busyboxContext({ extraLines: ['RUN --network=host true'] }),
      });
      world.storage.seed('algo', ids.badBuild, {
        blob: await busyboxContext({ extraLines: ['RUN echo "no such compiler" >&2 && exit 3'] }),
      });
      world.storage.seed('data', ids.train, { blob: await exampleData('train-1.csv') });
      world.storage.seed('data', ids.test, { blob: await exampleData('test.csv') });
      const env = await world.env();
      await prebuild(env, [
        ['workflow', problem],
        ['submission', submission],
        ['workflow', runner],
        ['submission', runner],
      ]);
    });

    afterAll(() => world?.close());

    /** Puts a data blob (a CSV, or a script for the runner) in storage; returns its uuid. */
    function data(content: string | Buffer): string {
      const { uuid } = newIds('uuid');
      world.storage.seed('data', uuid, { blob: content });
      return uuid;
    }

    function learn(fields: Record<string, unknown> = {}) {
      return {
        ...newIds('uuid', 'model_end'),
        workflow: ids.W,
        algo: ids.A,
        train_data: [ids.train],
        test_data: [ids.test],
        model_start: null,
        rank: 0,
        ...fields,
      };
    }

    function predict(fields: { model: string; data: string }) {
      return { ...newIds('uuid'), workflow: ids.W, ...fields };
    }

    function model(algo: string, files: Record<string, string>): Promise<string> {
      const { uuid } = newIds('uuid');
      return tarGz(files).then((blob) => {
        world.storage.seed('model', uuid, { blob, meta: { uuid, algo, timestamp_upload: 1 } });
        return uuid;
      });
    }

    async function expectFailed(
      env: TaskEnv,
      outcome: Outcome,
      expected: { code: ErrorCode; step: StepName; message: RegExp; retryable?: boolean },
    ) {
      const { report } = outcome;
      expect(report.status).toBe('failed');
      expect(report.error?.code, report.error?.describe()).toBe(expected.code);
      expect(report.error?.message).toMatch(expected.message);
      expect(report.failedStep).toBe(expected.step);
      expect(report.error?.retryable).toBe(expected.retryable ?? false);
      const reports = doneReports(world, report.uuid);
      expect(reports.map((r) => [r.path, r.body, r.status])).toEqual([
        [
          `/${report.kind === 'learn' ? 'learndone' : 'preddone'}/${report.uuid}`,
          {
            status: 'failed',
            error: expect.objectContaining({
              code: expected.code,
              step: expected.step,
              fault: faultOf(report.error as WorkerError),
              message: expect.stringMatching(expected.message),
              attempts: 1,
            }),
            usage: expect.objectContaining({ worker: env.workerId }),
          },
          200,
        ],
      ]);
      expect(await leftovers(report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    }

    /** Stops the task's train container from outside the worker, as an operator would. */
    async function stopTrainFromOutside(task: string, how: 'kill' | 'stop'): Promise<void> {
      const format = `{{.ID}} {{index .Labels "${LABEL_STEP}"}}`;
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        // podman 4.3 ORs two label filters: the step is read from each container instead.
        const running = await execa('podman', [
          'ps',
          ...['--filter', `label=${LABEL_TASK}=${task}`, '--filter', 'status=running'],
          ...['--format', format],
        ]);
        const train = running.stdout.split('\n').find((line) => line.endsWith(' train'));
        if (train) {
          await execa('podman', [how, train.split(' ')[0] as string]);
          return;
        }
        await sleep(200);
      }
      throw new Error(`the train container of ${task} never ran`);
    }

    describe.concurrent('each reported failed with its reason, leaving nothing behind', () => {
      it('a data blob missing from storage', async () => {
        const env = await world.env();
        const missing = newIds('uuid').uuid;
        const outcome = await runTask(world, env, learn({ train_data: [ids.train, missing] }));
        await expectFailed(env, outcome, {
          code: 'STORAGE_FAILED',
          step: 'stage',
          message: new RegExp(`storage has no data ${missing}`),
        });
      });

      it('a data blob without its size that passes the spool cap', async () => {
        const env = await world.env({ spoolCapBytes: 1024 * 1024 });
        const endless = newIds('uuid').uuid;
        world.storage.fault(`/data/${endless}/blob`, {
          stream: { status: 200, chunk: Buffer.alloc(64 * 1024, 0x31) },
        });
        const outcome = await runTask(world, env, learn({ train_data: [ids.train, endless] }));
        await expectFailed(env, outcome, {
          code: 'STORAGE_FAILED',
          step: 'stage',
          message: new RegExp(
            `storage sent data ${endless} without its size, and more than the 1048576 bytes`,
          ),
        });
        const request = world.storage.requests.find((r) => r.path === `/data/${endless}/blob`);
        await vi.waitFor(() => expect(request?.completed).toBe(false));
        expect(request?.sent).toBeLessThan(64 * 1024 * 1024);
      });

      it('a submission that exits non-zero', async () => {
        const env = await world.env();
        const script = data('echo "cannot converge" >&2\nexit 3\n');
        const outcome = await runTask(world, env, learn({ algo: ids.R, train_data: [script] }));
        await expectFailed(env, outcome, {
          code: 'CONTAINER_FAILED',
          step: 'train',
          message: /submission's train step exited with code 3/,
        });
        expect(outcome.report.error?.detail).toContain('cannot converge');
      });

      it('a submission that runs past the learn timeout', async () => {
        const env = await world.env({ learnTimeoutMs: 3000 });
        const script = data('echo "thinking"\nsleep 600\n');
        const outcome = await runTask(world, env, learn({ algo: ids.R, train_data: [script] }));
        await expectFailed(env, outcome, {
          code: 'CONTAINER_TIMEOUT',
          step: 'train',
          message: /submission's train step ran past its 3s limit and was killed/,
        });
        expect(outcome.report.error?.hint).toContain('--learn-timeout');
      });

      it('a submission that runs out of memory', async () => {
        const env = await world.env();
        const small = { ...env.limits, memoryBytes: 64 * 1024 ** 2 };
        const oomEnv = { ...env, limits: small };
        // Doubling a string until the 64m limit is hit.
        const script = data('awk \'BEGIN { s = "x"; while (1) s = s s }\'\n');
        const outcome = await runTask(world, oomEnv, learn({ algo: ids.R, train_data: [script] }));
        await expectFailed(oomEnv, outcome, {
          code: 'CONTAINER_OOM',
          step: 'train',
          message: /submission's train step ran out of memory \(limit 64m/i,
        });
      });

      it.each([
        { how: 'kill', exit: /exit code 137 \(killed by SIGKILL\)/ },
        { how: 'stop', exit: /exit code 143 \(killed by SIGTERM\)/ },
      ] as const)(
        'a submission an operator stops with podman $how (not its fault)',
        async ({ how, exit }) => {
          const env = await world.env();
          const script = data('echo "training"\nsleep 120\n');
          const task = learn({ algo: ids.R, train_data: [script] });
          const [outcome] = await Promise.all([
            runTask(world, env, task),
            stopTrainFromOutside(task.uuid, how),
          ]);
          await expectFailed(env, outcome, {
            code: 'CONTAINER_KILLED',
            step: 'train',
            message: /submission's train step was killed from outside the worker/,
            retryable: true,
          });
          expect(outcome.report.error?.message).toMatch(exit);
          expect(faultOf(outcome.report.error as WorkerError)).toBe('worker');
        },
      );

      // The runner as workflow: its perf step runs the hidden "test data" script.
      it.each([
        {
          what: 'no performance.json',
          perfScript: 'echo "scoring, but writing nothing"\n',
          message: /wrote no \/hidden_data\/perf\/performance\.json/,
        },
        {
          what: 'an invalid performance.json',
          perfScript: `echo '{"perf": "high", "train_perf": {}, "test_perf": {}}' > /hidden_data/perf/performance.json\n`,
          message: /performance\.json is invalid at field "perf"/,
        },
      ])('a workflow that writes $what', async ({ perfScript, message }) => {
        const env = await world.env();
        const outcome = await runTask(
          world,
          env,
          learn({
            workflow: ids.RW,
            algo: ids.R,
            train_data: [data('echo "training"\n')],
            test_data: [data(perfScript)],
          }),
        );
        await expectFailed(env, outcome, { code: 'PERFORMANCE_INVALID', step: 'perf', message });
      });

      it('a submission that writes no prediction', async () => {
        const env = await world.env();
        const modelUuid = await model(ids.R, { 'model.txt': 'weights\n' });
        const task = predict({ model: modelUuid, data: data('echo "predicting nothing"\n') });
        const outcome = await runTask(world, env, task);
        await expectFailed(env, outcome, {
          code: 'PREDICTION_MISSING',
          step: 'upload',
          message: new RegExp(`predict step wrote no /data/test/pred/${task.data}`),
        });
      });

      it('a start model archive with a ../ entry (rank > 0)', async () => {
        const env = await world.env();
        const hostile = await model(ids.A, { 'model.csv': 'class,count\n', '../escape.sh': 'x\n' });
        const outcome = await runTask(world, env, learn({ rank: 1, model_start: hostile }));
        await expectFailed(env, outcome, {
          code: 'ARCHIVE_REJECTED',
          step: 'stage',
          message: /\.\./,
        });
      });

      it('a model archive with a ../ entry (predict)', async () => {
        const env = await world.env();
        const hostile = await model(ids.A, { '../../etc/cron.d/x': '* * * * * root sh\n' });
        const outcome = await runTask(world, env, predict({ model: hostile, data: ids.test }));
        await expectFailed(env, outcome, {
          code: 'ARCHIVE_REJECTED',
          step: 'stage',
          message: /\.\./,
        });
      });

      it('a wrong storage password', async () => {
        const env = await world.env();
        const storage = new HttpStorageClient(serviceOptions(world.storage, 'not-the-password'));
        const wrong = { ...env, storage };
        const outcome = await runTask(world, wrong, learn());
        await storage.close();
        await expectFailed(wrong, outcome, {
          code: 'STORAGE_FAILED',
          step: 'build-workflow',
          message: /storage refused the credentials/,
        });
        expect(outcome.report.error?.hint).toContain('--storage-password');
        // The worker's set-up, not the submission: the daemon requeues it.
        expect(outcome.report.error && faultOf(outcome.report.error)).toBe('worker');
      });

      it('an unreachable storage, as an error worth retrying', async () => {
        const env = await world.env();
        const port = await closedPort();
        const storage = new HttpStorageClient({
          ...serviceOptions({ host: '127.0.0.1', port }),
          retryDelayMs: 10,
        });
        const down = { ...env, storage };
        const outcome = await runTask(world, down, learn());
        await storage.close();
        await expectFailed(down, outcome, {
          code: 'STORAGE_FAILED',
          step: 'build-workflow',
          message: new RegExp(`127\\.0\\.0\\.1:${port}`),
          retryable: true,
        });
      });

      it('a build context whose Containerfile asks for the host network', async () => {
        const env = await world.env();
        const outcome = await runTask(world, env, learn({ algo: ids.netHost }));
        await expectFailed(env, outcome, {
          code: 'BUILD_CONTEXT_REJECTED',
          step: 'build-submission',
          message: /network/i,
        });
      });

      it('a build that fails', async () => {
        const env = await world.env();
        const outcome = await runTask(world, env, learn({ algo: ids.badBuild }));
        await expectFailed(env, outcome, {
          code: 'BUILD_FAILED',
          step: 'build-submission',
          message: /build/i,
        });
        expect(outcome.report.error?.describe()).toContain('no such compiler');
      });
    });

    it('the submission cannot write into its inputs: /data/train and /data/test refuse with EROFS', async () => {
      const env = await world.env();
      // Files it owns, in folders it owns: only the read-only mount stands in the way.
      const attack = [
        'try() { if out=$( (eval "$1") 2>&1 ); then echo "did: $1"; else echo "refused: $1: $out"; fi; }',
        'for d in /data/train /data/test; do',
        '  try "echo x > $d/x"',
        '  try "mkdir $d/dir"',
        '  for f in $d/*; do if [ -f "$f" ]; then try "echo x >> $f"; try "rm $f"; fi; done',
        'done',
        'try "echo x > /data/train/pred/allowed"',
        'ls -ln /data/train /data/test',
      ].join('\n');
      const outcome = await runTask(
        world,
        env,
        learn({ algo: ids.R, train_data: [data(attack)], test_data: [ids.test] }),
      );
      const refused = outcome.logs.filter((l) => l.startsWith('refused: '));
      const did = outcome.logs.filter((l) => l.startsWith('did: '));
      // x and dir in each folder, then append and remove on the train script and the test file.
      expect(refused, outcome.logs.join('\n')).toHaveLength(8);
      for (const line of refused) expect(line).toMatch(/Read-only file system$/);
      // The command tried, without the error text (which names the script's own path).
      const tried = refused.map((l) => l.slice('refused: '.length, l.indexOf(':', 9)));
      expect(tried.filter((c) => c.includes(' /data/train/'))).toHaveLength(4);
      expect(tried.filter((c) => c.includes(' /data/test/'))).toHaveLength(4);
      expect(did).toEqual(['did: echo x > /data/train/pred/allowed']);
      expect(await leftovers(outcome.report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    });

    it('the submission sees neither the hidden test data nor a network', async () => {
      const env = await world.env();
      // The hidden test data: the example's features, with classes no other file has.
      const secret = `secret${randomBytes(4).toString('hex')}`;
      const csv = (await exampleData('test.csv'))
        .toString()
        .replace(/,(alpha|beta|gamma)$/gm, `,${secret}$1`);
      const firstFeatures = csv.split('\n')[1]?.split(',').slice(0, 4).join(',') ?? '';
      // Everything the submission can list and read, outside the kernel's own folders
      // and busybox; the script itself must not name what it looks for.
      const snoop = [
        'echo "== root"; ls -la /',
        'echo "== data"; ls -laR /data',
        'echo "== hidden"; ls -laR /hidden_data 2>&1',
        'echo "== files"',
        'find / \\( -path /proc -o -path /sys -o -path /dev -o -path /bin \\) -prune -o -type f -print |',
        // A file without a last newline (a binary one) must not swallow the next marker.
        '  while read -r f; do echo "-- $f"; cat "$f" 2>&1; echo; done',
        'echo "== net"; cat /proc/net/dev',
        'echo "== end"',
      ].join('\n');
      const outcome = await runTask(
        world,
        env,
        learn({ algo: ids.R, train_data: [data(snoop)], test_data: [data(csv)] }),
      );
      const logs = outcome.logs;
      const section = (name: string) => {
        const start = logs.indexOf(`== ${name}`);
        return logs.slice(
          start + 1,
          logs.findIndex((l, i) => i > start && l.startsWith('== ')),
        );
      };

      // It did look: the data folder and the detargeted test file were there to read.
      expect(logs).toContain('== end');
      expect(section('files')).toContain(firstFeatures);
      expect(section('files')).toContain('f1,f2,f3,f4');
      // Nothing of the hidden test data: no label column, none of its classes.
      expect(logs.filter((line) => line.includes('label'))).toEqual([]);
      expect(logs.filter((line) => line.includes(secret))).toEqual([]);
      expect(section('root').join('\n')).not.toContain('hidden_data');
      expect(section('hidden').join('\n')).toMatch(/No such file or directory/);
      // Only the loopback interface.
      const interfaces = section('net').flatMap((line) => /^\s*([^\s|:]+):/.exec(line)?.[1] ?? []);
      expect(interfaces).toEqual(['lo']);
      // The runner wrote no predictions, so the workflow's perf step fails.
      expect(outcome.report.failedStep).toBe('perf');
      expect(await leftovers(outcome.report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    });
  },
);
