import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatSize } from '../../src/config/size.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  doneReports,
  exampleContext,
  exampleData,
  LEARN_STEPS,
  leftovers,
  newIds,
  podman,
  podmanMissing,
  prebuild,
  scriptRunnerContext,
  startWorld,
  type TaskWorld,
  tarGz,
} from '../support/task-fixtures.js';
import { until } from '../support/until.js';

// `compute-worker task exec` as a person or a script runs it: the built CLI
// (bin/run.js over dist/, so `npm run build` comes first, as `npm test` does) in a
// child process, with stdout a pipe, not a terminal.

const root = fileURLToPath(new URL('../../', import.meta.url));
const PASSWORD = 'cli-secret';

/** A model the example submission can predict with: per-class counts and feature sums. */
const MODEL_CSV = [
  'class,count,sum_f1,sum_f2,sum_f3,sum_f4',
  'alpha,1,1,2,0.5,0',
  'beta,1,4,3,0,1.5',
  'gamma,1,0.5,1,3,2',
].join('\n');

/** A train script that prints terminal commands, a C1 control and invalid UTF-8, then fails. */
const ESCAPES_SCRIPT = [
  "printf '\\033]0;pwned\\007title\\n'",
  "printf '\\033[2J\\033[Hcleared\\n'",
  "printf 'loss 0.9\\rloss 0.1\\n'",
  "printf 'del\\177 c1\\302\\233 bad\\377\\n'",
  "printf 'tab\\there\\n'",
  "printf '\\033[2J\\033[Hcleared\\n' >&2",
  'exit 3',
  '',
].join('\n');

// Any control character but tab and the line break, C1 included.
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point
const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  'task exec',
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    let work: string;
    const ids = newIds(
      'workflow',
      'algo',
      'train',
      'test',
      'predictData',
      'model',
      'runner',
      'escapes',
    );

    beforeAll(async () => {
      if (!existsSync(join(root, 'dist/commands/task/exec.js'))) {
        throw new Error('dist/ is missing: run `npm run build` before these tests');
      }
      world = await startWorld(PASSWORD);
      work = await mkdtemp(join(tmpdir(), 'cw-cli-test-'));
      await writeFile(join(work, 'storage-password'), `${PASSWORD}\n`, { mode: 0o600 });
      const [problem, submission, runner] = await Promise.all([
        exampleContext('problem'),
        exampleContext('submission'),
        scriptRunnerContext(),
      ]);
      world.storage.seed('algo', ids.runner, { blob: runner });
      world.storage.seed('data', ids.escapes, { blob: ESCAPES_SCRIPT });
      world.storage.seed('problem', ids.workflow, { blob: problem });
      world.storage.seed('algo', ids.algo, { blob: submission });
      world.storage.seed('data', ids.train, { blob: await exampleData('train-1.csv') });
      world.storage.seed('data', ids.test, { blob: await exampleData('test.csv') });
      world.storage.seed('data', ids.predictData, { blob: await exampleData('predict.csv') });
      world.storage.seed('model', ids.model, {
        blob: await tarGz({ 'model.csv': `${MODEL_CSV}\n` }),
        meta: { uuid: ids.model, algo: ids.algo, timestamp_upload: 1 },
      });
      await prebuild(await world.env(), [
        ['workflow', problem],
        ['submission', submission],
        ['submission', runner],
      ]);
    });

    afterAll(async () => {
      await world?.close();
      if (work) await rm(work, { recursive: true, force: true });
    });

    /** The CLI's command line for this task JSON, with its own temp and state folders. */
    async function taskExecCommand(task: Record<string, unknown>, extra: string[] = []) {
      const dir = await mkdtemp(join(work, 'run-'));
      const file = join(dir, 'task.json');
      await writeFile(file, JSON.stringify(task));
      const tmp = join(dir, 'tmp');
      await mkdir(tmp);
      const args = [
        join(root, 'bin/run.js'),
        'task',
        'exec',
        file,
        '--engine',
        'podman',
        '--engine-path',
        podman.options.enginePath as string,
        '--oci-runtime',
        'runc',
        '--storage-host',
        world.storage.host,
        '--storage-port',
        String(world.storage.port),
        '--storage-password-file',
        join(dir, '..', 'storage-password'),
        '--orchestrator-host',
        world.orchestrator.host,
        '--orchestrator-port',
        String(world.orchestrator.port),
        '--state-dir',
        join(dir, 'state'),
        ...extra,
      ];
      const options = {
        reject: false,
        cwd: dir,
        // The orchestrator password from the environment: it never shows in ps.
        env: { TMPDIR: tmp, COMPUTE_WORKER_ORCHESTRATOR_PASSWORD: PASSWORD },
        stdin: 'ignore' as const,
      };
      return { args, options, tmp, state: join(dir, 'state') };
    }

    /** Runs the CLI on this task JSON with its own temp and state folders. */
    async function taskExec(task: Record<string, unknown>, extra: string[] = []) {
      const { args, options, tmp } = await taskExecCommand(task, extra);
      const result = await execa(process.execPath, args, options);
      return { ...result, tmp };
    }

    function learnTask(fields: Record<string, unknown> = {}) {
      const task = {
        ...newIds('uuid', 'model_end'),
        workflow: ids.workflow,
        algo: ids.algo,
        train_data: [ids.train],
        test_data: [ids.test],
        model_start: null,
        rank: 0,
        worker: null,
        status: 'todo',
        ...fields,
      };
      world.orchestrator.addTask('learnuplet', task.uuid, 'pending');
      return task;
    }

    /** No task temp folder left, and nothing of the task left in podman. */
    async function expectClean(uuid: string, tmp: string) {
      const left = await leftovers(uuid, tmp);
      expect(left.containers).toEqual([]);
      expect(left.volumes).toEqual([]);
      // task exec runs under a worker id of its own, made for that one run: its temp
      // folder, <TMPDIR>/compute-worker-<id>, goes when it ends, and it never takes the
      // state folder's id, which belongs to the daemon that locks that folder.
      expect(await readdir(tmp)).toEqual([]);
      expect(await readdir(join(tmp, '..', 'state'))).not.toContain('worker-id');
    }

    describe.concurrent('runs', () => {
      it('--json: a done predict task prints one result object and exits 0', async () => {
        const task = { ...newIds('uuid'), model: ids.model, data: ids.predictData };
        world.orchestrator.addTask('preduplet', task.uuid, 'pending');
        const result = await taskExec(task, ['--json']);
        expect(result.exitCode, result.stderr).toBe(0);
        const lines = result.stdout.split('\n').filter((line) => line !== '');
        expect(lines).toHaveLength(1);
        const json = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
        expect(json).toMatchObject({ status: 'done', kind: 'predict', uuid: task.uuid });
        expect(json.error).toBeUndefined();
        expect(json.performance).toBeUndefined();
        const steps = json.steps as { step: string; ms: number }[];
        expect(steps.map((s) => s.step)).toEqual([
          'build-submission',
          'stage',
          'predict',
          'upload',
          'report',
        ]);
        for (const step of steps) expect(step.ms).toBeGreaterThanOrEqual(0);
        expect(json.prediction).toMatch(/^[0-9a-f-]{36}$/);
        expect(doneReports(world, task.uuid)[0]?.body).toEqual({
          status: 'done',
          prediction_storage_uuid: json.prediction,
          usage: {
            worker: expect.any(String),
            host: hostname(),
            steps: { predict: expect.objectContaining({ wall_s: expect.any(Number) }) },
          },
        });
        expect(world.storage.blob('prediction', json.prediction as string)).toBeDefined();
        // Progress and the container's output went to stderr, stdout kept for the result.
        expect(result.stderr).toContain('> predict');
        expect(result.stderr).toContain(`  | predicted 50 rows of ${ids.predictData}`);
        await expectClean(task.uuid, result.tmp);
      });

      it('--data-cache-size: a second task exec on the same --data-cache-dir stages no data set', async () => {
        const cache = await mkdtemp(join(work, 'data-cache-'));
        const flags = ['--json', '--data-cache-size', '1g', '--data-cache-dir', cache];
        const notes: (string | undefined)[] = [];
        try {
          for (const task of [learnTask(), learnTask()]) {
            const result = await taskExec(task, flags);
            expect(result.exitCode, result.stderr).toBe(0);
            const json = JSON.parse(result.stdout) as { steps: { step: string; note?: string }[] };
            notes.push(json.steps.find((s) => s.step === 'stage')?.note);
            await expectClean(task.uuid, result.tmp);
          }
          expect(notes[0]).not.toContain('cached');
          expect(notes[1]).toBe('0 bytes (cached: train, hiddenTest)');
        } finally {
          for (const name of await readdir(join(cache, 'entries')).catch(() => [] as string[])) {
            const entry = JSON.parse(await readFile(join(cache, 'entries', name), 'utf8'));
            await execa(podman.options.enginePath as string, ['volume', 'rm', '-f', entry.volume]);
          }
        }
      });

      it('--json: a failed task prints the error, is reported failed and exits 1', async () => {
        const missing = newIds('uuid').uuid;
        const task = learnTask({ train_data: [missing] });
        const result = await taskExec(task, ['--json']);
        expect(result.exitCode, result.stderr).toBe(1);
        const lines = result.stdout.split('\n').filter((line) => line !== '');
        expect(lines).toHaveLength(1);
        const json = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
        expect(json).toMatchObject({
          status: 'failed',
          fault: 'task',
          kind: 'learn',
          failedStep: 'stage',
        });
        expect(json.performance).toBeUndefined();
        expect(json.model).toBeUndefined();
        const error = json.error as { code: string; message: string; retryable: boolean };
        expect(error.code).toBe('STORAGE_FAILED');
        expect(error.message).toContain(`data ${missing}`);
        expect(error.retryable).toBe(false);
        expect(Array.isArray(json.steps)).toBe(true);
        // The body the orchestrator got, also printed as "report".
        const sent = {
          status: 'failed',
          error: {
            code: 'STORAGE_FAILED',
            step: 'stage',
            fault: 'task',
            message: expect.stringContaining(`data ${missing}`),
            retryable: false,
            attempts: 1,
          },
          usage: { worker: expect.any(String), host: hostname(), steps: {} },
        };
        expect(doneReports(world, task.uuid).map((r) => r.body)).toEqual([sent]);
        expect(json.report).toEqual(sent);
        await expectClean(task.uuid, result.tmp);
      });

      it('without a terminal, prints the steps, the container output and the performance', async () => {
        const task = learnTask();
        const result = await taskExec(task);
        expect(result.exitCode, result.stderr).toBe(0);
        const out = result.stdout;
        for (const step of LEARN_STEPS) {
          expect(out).toContain(`> ${step}\n`);
          expect(out).toMatch(new RegExp(`  ${step} done in `));
        }
        expect(out).toContain(`staged data/${ids.train}`);
        expect(out).toContain(`  | detargeted ${ids.test}`);
        expect(out).toContain(`  | predicted 200 rows of ${ids.test}`);
        const done = doneReports(world, task.uuid)[0]?.body as { status: string; perf: number };
        expect(done.status).toBe('done');
        expect(out).toContain(`learn task ${task.uuid} done: performance ${done.perf}\n`);
        expect(out).toContain(`  test ${ids.test}: `);
        expect(out).toMatch(new RegExp(`  model uploaded as ${task.model_end}$`));
        expect(out).not.toContain('\u001b['); // no terminal colours into a pipe
        await expectClean(task.uuid, result.tmp);
      });

      it('a task exec killed with SIGKILL: the next one on its state folder removes what it left', async () => {
        const sleeper = newIds('data').data;
        world.storage.seed('data', sleeper, { blob: 'echo sleeping\nsleep 600\n' });
        const task = learnTask({ algo: ids.runner, train_data: [sleeper] });
        const killed = await taskExecCommand(task);
        const child = execa(process.execPath, killed.args, killed.options);
        let out = '';
        child.stdout?.on('data', (chunk: Buffer) => {
          out += chunk.toString('utf8');
        });
        await until(() => out.includes('| sleeping'), 180_000, 'the train step sleeping');
        child.kill('SIGKILL');
        await child;
        const [runId] = await readdir(join(killed.state, 'exec'));
        expect(runId).toMatch(/^[0-9a-f-]{36}$/);
        // Nothing removed them: the train container still sleeps.
        const before = await leftovers(task.uuid, killed.tmp);
        expect(before.containers).not.toEqual([]);
        expect(before.volumes).not.toEqual([]);
        // Its temp folder, and beside it the live folder whose lock tells doctor it ran.
        expect(before.tmp.sort()).toEqual([
          `compute-worker-${runId}`,
          `compute-worker-${runId}.live`,
        ]);
        // As root with rootful podman, its steps' sized filesystems are still mounted.
        const sized = process.getuid?.() === 0;
        const held = async () => ({
          mounted: (await readFile('/proc/self/mountinfo', 'utf8')).includes(`${killed.tmp}/`),
          attached: (await execa('losetup', ['-a'])).stdout.includes(`${killed.tmp}/`),
        });
        if (sized) expect(await held()).toEqual({ mounted: true, attached: true });

        // Another command on the state folder, with a TMPDIR of its own.
        const next = { ...newIds('uuid'), model: ids.model, data: ids.predictData };
        world.orchestrator.addTask('preduplet', next.uuid, 'pending');
        const result = await taskExec(next, ['--state-dir', killed.state]);
        expect(result.exitCode, result.stderr).toBe(0);
        expect(result.stderr).toContain('removed what a killed task exec left');
        expect(await leftovers(task.uuid, killed.tmp)).toEqual({
          containers: [],
          volumes: [],
          tmp: [],
        });
        expect(await readdir(join(killed.state, 'exec'))).toEqual([]);
        if (sized) expect(await held()).toEqual({ mounted: false, attached: false });
      });

      it('shows the control characters of a container’s output as escapes, never raw', async () => {
        const task = learnTask({ algo: ids.runner, train_data: [ids.escapes] });
        const result = await taskExec(task);
        expect(result.exitCode, result.stderr).toBe(1);
        const out = result.stdout;
        expect(out).toContain('  | \\x1b]0;pwned\\x07title\n');
        expect(out).toContain('  | \\x1b[2J\\x1b[Hcleared\n');
        expect(out).toContain('  | loss 0.9\\x0dloss 0.1\n');
        expect(out).toContain('  | del\\x7f c1\\x9b bad\uFFFD\n');
        expect(out).toContain('  | tab\there\n');
        // The error's detail, the container's last lines, is as clean.
        const closing = out.slice(out.indexOf(`learn task ${task.uuid} failed at step train`));
        expect(closing).toMatch(/exited with code 3/);
        expect(closing).toContain('\\x1b]0;pwned\\x07title');
        for (const text of [out, result.stderr]) expect(text).not.toMatch(RAW_CONTROL);
        await expectClean(task.uuid, result.tmp);
      });

      it('an invalid task file exits 2 with a message naming the field', async () => {
        const task = learnTask({ rank: 2, model_start: null });
        const result = await taskExec(task);
        expect(result.exitCode).toBe(2);
        expect(result.stderr).toMatch(
          /task field "model_start": must be a non-nil UUID when rank > 0/,
        );
        expect(result.stdout).toBe('');
        // Nothing was started, nothing reported.
        expect(doneReports(world, task.uuid)).toEqual([]);
      });

      it('an invalid task file with --json still prints one object naming the field', async () => {
        const task = learnTask({ rank: 2, model_start: null });
        const result = await taskExec(task, ['--json']);
        expect(result.exitCode).toBe(2);
        const out = JSON.parse(result.stdout) as {
          status: string;
          error: { code: string; message: string };
        };
        expect(out.status).toBe('invalid');
        expect(out.error.code).toBe('TASK_INVALID');
        expect(out.error.message).toMatch(/"model_start": must be a non-nil UUID when rank > 0/);
      });
    });

    // After the runs above, not beside them: more task exec processes at once made the
    // first storage downloads fail (connection closed) on a loaded host.
    describe('worker faults', () => {
      it('--json: a storage outage is the worker fault: not reported, status error, exits 3', async () => {
        const down = newIds('uuid').uuid;
        world.storage.seed('data', down, { blob: await exampleData('train-1.csv') });
        world.storage.fault(`/data/${down}/blob`, { status: 503 });
        const task = learnTask({ train_data: [down] });
        const result = await taskExec(task, ['--json']);
        expect(result.exitCode, result.stderr).toBe(3);
        const lines = result.stdout.split('\n').filter((line) => line !== '');
        expect(lines).toHaveLength(1);
        const json = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
        expect(json).toMatchObject({
          status: 'error',
          fault: 'worker',
          kind: 'learn',
          uuid: task.uuid,
          failedStep: 'stage',
        });
        const error = json.error as { code: string; message: string; retryable: boolean };
        expect(error).toMatchObject({ code: 'STORAGE_FAILED', retryable: true });
        expect(error.message).toMatch(/503/);
        // The task is fine: the orchestrator hears nothing, the operator runs it again.
        expect(doneReports(world, task.uuid)).toEqual([]);
        expect(world.orchestrator.task(task.uuid)?.status).toBe('pending');
        await expectClean(task.uuid, result.tmp);
      });

      it("without a terminal, a worker fault says it is not the task's fault and exits 3", async () => {
        const down = newIds('uuid').uuid;
        world.storage.fault(`/data/${down}/blob`, { status: 503 });
        const task = learnTask({ train_data: [down] });
        const result = await taskExec(task);
        expect(result.exitCode, result.stderr).toBe(3);
        expect(result.stdout).toContain(`learn task ${task.uuid} failed at step stage: `);
        expect(result.stdout).toMatch(
          /not the task's fault: the worker could not run this task: .*503.*It was not reported failed: run it again/,
        );
        expect(doneReports(world, task.uuid)).toEqual([]);
      });
    });
  },
);

// Needs only the built CLI, no engine.
describe('task exec --help', () => {
  it("shows the engine's default limits as the defaults of the limit flags", async () => {
    const result = await execa(process.execPath, [
      join(root, 'bin/run.js'),
      'task',
      'exec',
      '--help',
    ]);
    // oclif wraps the help in columns: compare it as one line.
    const help = result.stdout.replace(/\s+/g, ' ');
    const shown = {
      '--memory=<size>': formatSize(DEFAULT_LIMITS.memoryBytes),
      '--cpus=<number>': String(DEFAULT_LIMITS.cpus),
      '--pids-limit=<value>': String(DEFAULT_LIMITS.pidsLimit),
      '--tmpfs-size=<size>': formatSize(DEFAULT_LIMITS.tmpfsBytes),
      '--shm-size=<size>': formatSize(DEFAULT_LIMITS.shmBytes),
      '--user=<value>': DEFAULT_LIMITS.user,
    };
    for (const [flag, value] of Object.entries(shown)) {
      expect(help).toContain(`${flag} [default: ${value}, env: COMPUTE_WORKER_`);
    }
    expect(help).toContain('--memory=<size> [default: 4g, env: COMPUTE_WORKER_MEMORY]');
  });
});
