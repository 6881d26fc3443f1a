import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';

// The example problem and submission, run as the worker runs them: images built
// from packed contexts, hardened containers, the SPEC's folders and commands.
// Bind mounts stand in for the worker's volumes.

const examples = fileURLToPath(new URL('../../examples/', import.meta.url));
const data = join(examples, 'data');

async function succeeds(command: string, args: string[]): Promise<boolean> {
  const result = await execa(command, args, { reject: false });
  return result.exitCode === 0;
}

const hasPodman = await succeeds('podman', ['--version']);
const requireEngines = process.env.CW_TEST_REQUIRE_ENGINES === '1';
// crun fails on hybrid-cgroup hosts; runc works everywhere podman does.
const runtimeArgs = (await succeeds('runc', ['--version'])) ? ['--runtime', 'runc'] : [];

const hardening = [
  '--network=none',
  '--user',
  '1000:1000',
  '--read-only',
  '--cap-drop=ALL',
  '--ulimit',
  'nofile=1024:1024',
  '--ulimit',
  'nproc=1024:1024',
];

function podman(args: string[]) {
  return execa('podman', [...runtimeArgs, ...args], { reject: false, all: true });
}

/** Runs IMAGE with COMMAND, each [host, container] pair bind-mounted. */
function run(image: string, mounts: Array<[string, string]>, command: string[]) {
  const volumes = mounts.flatMap(([host, inside]) => ['-v', `${host}:${inside}`]);
  return podman(['run', '--rm', ...hardening, ...volumes, image, ...command]);
}

const perfCommand = ['-T', 'perf', '-i', '/hidden_data', '-s', '/submission_data'];

const performanceSchema = z.strictObject({
  perf: z.number(),
  train_perf: z.record(z.string(), z.number()),
  test_perf: z.record(z.string(), z.number()),
});

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

function modelCounts(modelCsv: string): Map<string, number> {
  const rows = lines(modelCsv);
  expect(rows[0]).toBe('class,count,sum_f1,sum_f2,sum_f3,sum_f4');
  return new Map(
    rows.slice(1).map((row) => {
      const [name, count] = row.split(',');
      return [name ?? '', Number(count)];
    }),
  );
}

describe.skipIf(!hasPodman && !requireEngines)('example problem and submission', () => {
  const suffix = randomBytes(4).toString('hex');
  const problemImage = `localhost/cw-example-problem-test:${suffix}`;
  const submissionImage = `localhost/cw-example-submission-test:${suffix}`;
  const testUuid = randomUUID();
  const train1Uuid = randomUUID();
  const train2Uuid = randomUUID();
  const predictUuid = randomUUID();
  let work = '';
  const dir = (name: string) => join(work, name);

  /** A folder the container's user 1000 can write, rootful or rootless. */
  async function folder(name: string): Promise<string> {
    await mkdir(dir(name), { recursive: true });
    await chmod(dir(name), 0o777);
    return dir(name);
  }

  async function stage(file: string, folderName: string, uuid: string): Promise<void> {
    await folder(folderName);
    await copyFile(join(data, file), join(dir(folderName), uuid));
    await chmod(join(dir(folderName), uuid), 0o644);
  }

  async function build(context: string, tag: string): Promise<void> {
    const archive = dir(`${context}.tar.gz`);
    await execa('sh', [join(examples, 'pack-context.sh'), join(examples, context), archive]);
    await mkdir(dir(context));
    await execa('tar', ['-xzf', archive, '-C', dir(context)]);
    const result = await podman([
      'build',
      '--network=none',
      '--pull=never',
      '-t',
      tag,
      dir(context),
    ]);
    expect(result.exitCode, result.all).toBe(0);
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'cw-examples-'));
    await Promise.all([build('problem', problemImage), build('submission', submissionImage)]);
    await stage('test.csv', 'hidden-test', testUuid);
    await stage('train-1.csv', 'train-1', train1Uuid);
    await stage('train-2.csv', 'train-2', train2Uuid);
    await stage('predict.csv', 'predict', predictUuid);
    await Promise.all(['test', 'model', 'perf'].map(folder));
  });

  afterAll(async () => {
    await podman(['rmi', '--force', problemImage, submissionImage]);
    if (!work) return;
    // Rootless, the container's files belong to a sub-uid only podman unshare can remove.
    if (process.getuid?.() !== 0) await podman(['unshare', 'rm', '-rf', work]);
    await rm(work, { recursive: true, force: true });
  });

  const detarget = (): Array<[string, string]> => [
    [dir('hidden-test'), '/hidden_data/test'],
    [dir('test'), '/submission_data/test'],
  ];
  const perf = (train: string, test = 'test'): Array<[string, string]> => [
    [dir('hidden-test'), '/hidden_data/test'],
    [dir('perf'), '/hidden_data/perf'],
    [dir(train), '/submission_data/train'],
    [dir(test), '/submission_data/test'],
  ];
  const train = (trainFolder: string): Array<[string, string]> => [
    [dir(trainFolder), '/data/train'],
    [dir('test'), '/data/test'],
    [dir('model'), '/data/model'],
  ];

  it('detarget copies the hidden test data without the label column', async () => {
    const result = await run(problemImage, detarget(), [
      '-T',
      'detarget',
      '-i',
      '/hidden_data',
      '-s',
      '/submission_data',
    ]);
    expect(result.exitCode, result.all).toBe(0);
    const original = lines(await readFile(join(data, 'test.csv'), 'utf8'));
    const detargeted = lines(await readFile(join(dir('test'), testUuid), 'utf8'));
    expect(original[0]).toBe('f1,f2,f3,f4,label');
    expect(detargeted).toEqual(original.map((row) => row.split(',').slice(0, 4).join(',')));
  });

  it('train saves a model and predicts the train and test data', async () => {
    const result = await run(submissionImage, train('train-1'), ['-V', '/data', '-T', 'train']);
    expect(result.exitCode, result.all).toBe(0);
    const counts = modelCounts(await readFile(join(dir('model'), 'model.csv'), 'utf8'));
    expect([...counts.keys()]).toEqual(['alpha', 'beta', 'gamma']);
    expect([...counts.values()].reduce((a, b) => a + b)).toBe(300);
    expect(await readFile(join(dir('model'), 'README'), 'utf8')).toContain('nearest-centroid');
    const testPred = lines(await readFile(join(dir('test'), 'pred', testUuid), 'utf8'));
    expect(testPred[0]).toBe('label');
    expect(testPred).toHaveLength(201);
    const trainPred = lines(await readFile(join(dir('train-1'), 'pred', train1Uuid), 'utf8'));
    expect(trainPred).toHaveLength(301);
  });

  it('perf scores the predictions into performance.json keyed by the data uuids', async () => {
    // The flags in another order than the SPEC's: the workflow accepts any order.
    const result = await run(problemImage, perf('train-1'), [
      '-s',
      '/submission_data',
      '-T',
      'perf',
      '-i',
      '/hidden_data',
    ]);
    expect(result.exitCode, result.all).toBe(0);
    const json = await readFile(join(dir('perf'), 'performance.json'), 'utf8');
    const performance = performanceSchema.parse(JSON.parse(json));
    expect(performance.perf).toBeGreaterThan(0.7);
    expect(performance.perf).toBeLessThanOrEqual(1);
    expect(Object.keys(performance.test_perf)).toEqual([testUuid]);
    expect(Object.keys(performance.train_perf)).toEqual([train1Uuid]);

    // The score is the real accuracy of the prediction file.
    const labels = lines(await readFile(join(data, 'test.csv'), 'utf8'))
      .slice(1)
      .map((row) => row.split(',')[4]);
    const predicted = lines(await readFile(join(dir('test'), 'pred', testUuid), 'utf8')).slice(1);
    const correct = predicted.filter((label, i) => label === labels[i]).length;
    expect(performance.perf).toBeCloseTo(correct / labels.length, 4);
    expect(performance.test_perf[testUuid]).toBe(performance.perf);
  });

  it('continued training from the saved model adds the new data to it', async () => {
    const before = modelCounts(await readFile(join(dir('model'), 'model.csv'), 'utf8'));
    const result = await run(submissionImage, train('train-2'), ['-V', '/data', '-T', 'train']);
    expect(result.exitCode, result.all).toBe(0);
    expect(result.all).toContain('continuing training from the saved model');
    const after = modelCounts(await readFile(join(dir('model'), 'model.csv'), 'utf8'));
    expect([...after.keys()]).toEqual([...before.keys()]);
    expect([...after.values()].reduce((a, b) => a + b)).toBe(600);
    for (const [name, count] of before) expect(after.get(name)).toBeGreaterThan(count);

    const scored = await run(problemImage, perf('train-2'), perfCommand);
    expect(scored.exitCode, scored.all).toBe(0);
    const json = await readFile(join(dir('perf'), 'performance.json'), 'utf8');
    expect(Object.keys(performanceSchema.parse(JSON.parse(json)).train_perf)).toEqual([train2Uuid]);
  });

  it('predict writes one label per row of the input', async () => {
    const result = await run(
      submissionImage,
      [
        [dir('predict'), '/data/test'],
        [dir('model'), '/data/model'],
      ],
      ['-V', '/data', '-T', 'predict'],
    );
    expect(result.exitCode, result.all).toBe(0);
    const input = lines(await readFile(join(dir('predict'), predictUuid), 'utf8'));
    const predicted = lines(await readFile(join(dir('predict'), 'pred', predictUuid), 'utf8'));
    expect(predicted[0]).toBe('label');
    expect(predicted).toHaveLength(input.length);
    for (const label of predicted.slice(1)) expect(['alpha', 'beta', 'gamma']).toContain(label);
  });

  it('perf fails with a clear message when a prediction is missing', async () => {
    await folder('test-without-predictions');
    const result = await run(
      problemImage,
      perf('train-2', 'test-without-predictions'),
      perfCommand,
    );
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(`missing prediction for /submission_data/test/${testUuid}`);
    await expect(readFile(join(dir('perf'), 'performance.json'))).rejects.toThrow();
  });

  it('an unknown task exits 2 with a message', async () => {
    const result = await run(problemImage, detarget(), ['-T', 'score', '-i', '/x', '-s', '/y']);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toContain('unknown task');
  });
});
