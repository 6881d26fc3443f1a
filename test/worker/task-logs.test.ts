import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { learnTask, predictTask } from '../support/worker-fixtures.js';
import { type Harness, reportsOf, TOPIC, useHarness } from '../support/worker-harness.js';
import { BIN, hasPodman, requireEngines } from '../support/worker-process.js';

// The output an operator hands over: each task's step output, kept in the state folder and
// printed by `compute-worker task logs UUID`.

const taskLogs = (args: string[]) =>
  execa('node', [BIN, 'task', 'logs', ...args], {
    reject: false,
    env: { NODE_NO_WARNINGS: '1' },
  });

describe.skipIf(!hasPodman && !requireEngines)('task logs', () => {
  let h: Harness;
  // A harness each: a worker left from one test would take the other's messages.
  useHarness(
    { msgTimeoutMs: 10_000 },
    (started) => {
      h = started;
    },
    { each: true },
  );

  it("keeps every step's output, the workflow's too, which the failed report never carries", async () => {
    const stateDir = await h.fleet.newStateDir();
    const worker = await h.fleet.start(await h.args([], stateDir), { env: h.env });
    const task = learnTask(h.storage, h.orchestrator, h.fixtures, {
      say: ['hello from the submission', 'colours \x1b[31mred\x1b[0m'],
      exit: 3,
    });
    h.nsqd.publish(TOPIC.learn, task.body);
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.msg.startsWith('task failed'),
      300_000,
      'the task failed',
    );

    const text = await taskLogs([task.uuid, '--state-dir', stateDir]);
    // The output as an operator sees it, for the documentation.
    process.stderr.write(`task logs ${task.uuid}:\n${text.stdout}`);
    expect(text.exitCode).toBe(0);
    const lines = text.stdout.split('\n');
    expect(lines[0]).toMatch(
      new RegExp(`^== learn task ${task.uuid}, attempt 1: started \\S+, failed at \\S+$`),
    );
    const detarget = lines.indexOf('-- detarget');
    const train = lines.indexOf('-- train');
    expect(detarget).toBeGreaterThan(0);
    expect(train).toBeGreaterThan(detarget);
    expect(lines.slice(detarget + 1, train).join('\n')).toMatch(
      /^workflow detarget: \d+ hidden test files$/m,
    );
    // Control characters are shown as escapes, as in a report's log_tail.
    expect(lines.slice(train + 1)).toEqual([
      'hello from the submission',
      'colours \\x1b[31mred\\x1b[0m',
      'asked to exit with 3',
    ]);
    const build = lines.indexOf('-- build-submission');
    expect(build === -1 || build < detarget).toBe(true);

    const json = await taskLogs([task.uuid, '--state-dir', stateDir, '--step', 'train', '--json']);
    const result = JSON.parse(json.stdout);
    expect(result.attempts).toHaveLength(1);
    expect(result.attempts[0]).toMatchObject({
      uuid: task.uuid,
      kind: 'learn',
      attempt: 1,
      outcome: 'failed',
      steps: {
        train: [
          'hello from the submission',
          'colours \\x1b[31mred\\x1b[0m',
          'asked to exit with 3',
        ],
      },
    });
    expect(Object.keys(result.attempts[0].steps)).toEqual(['train']);

    // The orchestrator hears the submission's own lines only.
    const [report] = reportsOf(h.orchestrator, task.uuid);
    const error = report?.body.error as { log_tail?: string[] };
    expect(error.log_tail).toEqual([
      'hello from the submission',
      'colours \\x1b[31mred\\x1b[0m',
      'asked to exit with 3',
    ]);
    expect(JSON.stringify(report?.body)).not.toContain('workflow detarget');

    const unknown = await taskLogs([
      '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
      '--state-dir',
      stateDir,
    ]);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain(
      'no output of task 1b4e28ba-2fa1-11d2-883f-0016d3cca427 is kept',
    );
    const notUuid = await taskLogs(['../../etc', '--state-dir', stateDir]);
    expect(notUuid.exitCode).toBe(2);
    expect(notUuid.stderr).toContain('is not a task uuid');
  }, 400_000);

  it('keeps the start of an output past --task-log-size, marked, and prunes output past its retention at start', async () => {
    const stateDir = await h.fleet.newStateDir();
    // Output of two earlier tasks: one last written 8 days ago, one an hour ago.
    const old = '0e0b8a0e-0000-4000-8000-000000000001';
    const recent = '0e0b8a0e-0000-4000-8000-000000000002';
    for (const [uuid, age] of [
      [old, 8 * 24 * 3600],
      [recent, 3600],
    ] as const) {
      const dir = join(stateDir, 'task-logs', uuid, 'attempt-1');
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'train.log'), 'an earlier line\n');
      const when = new Date(Date.now() - age * 1000);
      await utimes(join(dir, 'train.log'), when, when);
      await utimes(dir, when, when);
    }
    const worker = await h.fleet.start(await h.args(['--task-log-retention', '7d'], stateDir), {
      env: { ...h.env, COMPUTE_WORKER_TASK_LOG_SIZE: '2k' },
    });
    await worker.waitForLine((l) => l.msg === 'worker started', 120_000, 'the worker started');
    await expect(stat(join(stateDir, 'task-logs', old))).rejects.toThrow(/ENOENT/);
    expect(
      await readFile(join(stateDir, 'task-logs', recent, 'attempt-1', 'train.log'), 'utf8'),
    ).toBe('an earlier line\n');
    expect(worker.find('removed kept task output past --task-log-retention')[0]).toMatchObject({
      level: 'info',
      tasks: 1,
    });

    const task = predictTask(h.storage, h.orchestrator, h.fixtures, { spam: 500 });
    h.nsqd.publish(TOPIC.predict, task.body);
    await worker.waitForLine(
      (l) => l.task === task.uuid && l.msg === 'task done',
      300_000,
      'the task done',
    );
    const file = join(stateDir, 'task-logs', task.uuid, 'attempt-1', 'predict.log');
    const kept = (await readFile(file, 'utf8')).split('\n');
    expect(kept[0]).toBe('line 0 of 500');
    expect(kept.at(-2)).toBe('[compute-worker: output past --task-log-size 2k is not kept]');
    expect(kept).not.toContain('predict done');
    expect((await stat(file)).size).toBeLessThanOrEqual(2048 + 100);
    const result = JSON.parse(
      (await taskLogs([task.uuid, '--state-dir', stateDir, '--json'])).stdout,
    );
    const [attempt] = result.attempts;
    expect(attempt.outcome).toBe('done');
    // 500 lines "line N of 500" and "predict done": what did not fit is counted.
    expect(attempt.truncated.lines).toBe(500 + 1 - (kept.length - 2));
    const text = await taskLogs([task.uuid, '--state-dir', stateDir]);
    expect(text.stdout).toContain(`== ${attempt.truncated.lines} lines (`);
  }, 400_000);
});
