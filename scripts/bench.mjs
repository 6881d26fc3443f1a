// The worker's costs next to the engine's, in one table, all measured in the same run:
//
//   npm run bench [-- --engine docker] [--runs 5] [--staging-mib 1024]     (as root)
//   npm run bench -- --only overhead      the overhead and calls rows alone (a few minutes)
//   npm run bench -- --only builds        the untrusted build rows on a 1 GiB base
//   npm run bench -- --only cache         the data cache row alone (a minute)
//
// Services are the test stand-ins (SPEC storage and orchestrator over HTTP, an NSQ nsqd
// over TCP) on 127.0.0.1, compiled from test/support into a temp folder; the task is the
// example problem and submission of examples/, images built once before anything is timed.
//   overhead   `compute-worker task exec` of a cached learn task against
//              scripts/bench-floor.sh (the same engine commands, images, data and
//              hardening flags, back to back), median of --runs paired runs, alternating
//              which goes first; wall time and CPU (the CLIs', not the containers')
//   calls      engine CLI calls of one learn and one predict task, by verb
//   staging    --staging-mib from storage into a volume: the worker's staging code in a
//              process of its own, against `curl | podman volume import` of the same bytes,
//              median of --runs paired runs
//   memory     peak RSS of that staging process, and of `compute-worker run` doing 4 learn
//              tasks at once
//   data cache --staging-mib as a task's train set with --data-cache-size on: the first
//              task's staging (header request, download, volume import) against the
//              second's (header request, the cached volume reused), each in a process of
//              its own, a fresh cache folder per pair, median of --runs pairs
//   start-up   `compute-worker --version` and `--help`
//   cache      a second task of the same workflow and algo builds nothing
//   disk       the sized filesystem a writing step gets as root with podman (--disk-limit
//              20g): made and mounted, then released, median of --runs; a learn task
//              makes three of them while its images build
//   big base   a submission FROM a 1 GiB base image (podman): its untrusted build (the
//              build user's own store, the base copied once into the base store, the
//              built layer moved to the host's) against the trusted build of the same
//              context in the host's store; the first one, then the median of --runs
//              new submissions, and what the base store grew by on the second
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const MIB = 1024 * 1024;
const PASSWORD = `bench-${randomUUID()}`;
const { values: opts } = parseArgs({
  options: {
    engine: { type: 'string', default: 'podman' },
    runs: { type: 'string', default: '5' },
    'staging-mib': { type: 'string', default: '1024' },
    only: { type: 'string' },
    'stage-child': { type: 'string' },
    'cache-child': { type: 'string' },
  },
});

if (opts['stage-child']) {
  await stageChild(JSON.parse(opts['stage-child']));
  process.exit(0);
}
if (opts['cache-child']) {
  await cacheChild(JSON.parse(opts['cache-child']));
  process.exit(0);
}

const engine = opts.engine;
const runs = Number(opts.runs);
const stagingMib = Number(opts['staging-mib']);
const only = opts.only;
if (
  !['podman', 'docker'].includes(engine) ||
  !(runs > 0) ||
  !(stagingMib > 0) ||
  ![undefined, 'overhead', 'builds', 'cache'].includes(only)
) {
  console.error(
    'usage: npm run bench [-- --engine podman|docker] [--runs N] [--staging-mib N] [--only overhead|builds|cache]',
  );
  process.exit(2);
}
const runc = engine === 'podman' && ['/usr/sbin/runc', '/usr/bin/runc'].some(existsSync);

/** Runs a command to its end; rejects on a non-zero exit with its output. */
function exec(cmd, args, options = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: options.env ?? process.env, cwd: options.cwd ?? root });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    options.onSpawn?.(child);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0 || options.allowFailure) resolve({ out, err, code, signal });
      else
        reject(
          new Error(
            `${cmd} ${args.join(' ')} exited ${code ?? signal}:\n${err.slice(-3000)}\n${out.slice(-3000)}`,
          ),
        );
    });
  });
}

/** Wall seconds, CPU seconds (user + system of the process and the CLIs it waited for), peak RSS. */
async function timed(cmd, args, options = {}) {
  const file = join(work, `time-${randomUUID()}`);
  const started = process.hrtime.bigint();
  const result = await exec('/usr/bin/time', ['-f', '%U %S %M', '-o', file, cmd, ...args], options);
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  const [user, sys, rssKiB] = (await readFile(file, 'utf8')).trim().split('\n').pop().split(' ');
  return { ...result, wall, cpu: Number(user) + Number(sys), rssMiB: Number(rssKiB) / 1024 };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const work = await mkdtemp(join(tmpdir(), 'cw-bench-'));
const cleanups = [];
try {
  await main();
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await rm(work, { recursive: true, force: true });
}

async function main() {
  if (process.getuid?.() !== 0)
    throw new Error('run the benchmark as root (it drives rootful podman)');
  for (const tool of ['/usr/bin/time', '/usr/bin/curl']) {
    if (!existsSync(tool)) throw new Error(`the benchmark needs ${tool}`);
  }
  if (only === 'builds') {
    if (engine !== 'podman') throw new Error('--only builds measures podman builds');
    console.error('bench: untrusted builds on a 1 GiB base');
    printTable(bigBaseRows(await measureBigBase()));
    return;
  }
  console.error('bench: compiling the service stand-ins of test/support');
  // Inside node_modules, so the compiled files find their packages (zod).
  const support = join(root, 'node_modules/.cache/compute-worker-bench');
  await rm(support, { recursive: true, force: true });
  await exec(process.execPath, [
    join(root, 'node_modules/typescript/bin/tsc'),
    ...['--outDir', support, '--module', 'nodenext', '--moduleResolution', 'nodenext'],
    ...['--target', 'es2022', '--skipLibCheck', '--types', 'node'],
    ...['test/support/storage-server.ts', 'test/support/orchestrator-server.ts'],
    'test/support/nsq/index.ts',
  ]);
  const load = (file) => import(pathToFileURL(join(support, file)).href);
  const { startStorageServer } = await load('storage-server.js');
  const { startOrchestratorServer } = await load('orchestrator-server.js');
  const { startNsqd } = await load('nsq/index.js');
  const storage = await startStorageServer({ password: PASSWORD });
  const orchestrator = await startOrchestratorServer({
    password: PASSWORD,
    acceptUnknownTasks: true,
  });
  const nsqd = await startNsqd({ msgTimeoutMs: 60_000 });
  cleanups.push(
    () => storage.close(),
    () => orchestrator.close(),
    () => nsqd.stop(),
  );

  const ids = await seed(storage);
  const env = {
    ...process.env,
    COMPUTE_WORKER_STORAGE_PASSWORD: PASSWORD,
    COMPUTE_WORKER_ORCHESTRATOR_PASSWORD: PASSWORD,
    BENCH_AUTH: `u:${PASSWORD}`,
  };
  if (only === 'cache') {
    console.error(`bench: ${runs} pairs of a ${stagingMib} MiB set staged, then from the cache`);
    printTable([cacheRow(await measureCachedStaging(storage, env))]);
    return;
  }
  const common = [
    ...['--engine', engine, '--storage-host', storage.host, '--storage-port', `${storage.port}`],
    ...['--orchestrator-host', orchestrator.host, '--orchestrator-port', `${orchestrator.port}`],
    ...(runc ? ['--oci-runtime', 'runc'] : []),
  ];
  const cli = join(root, 'bin/run.js');
  // `task exec` reports a task it was handed: the orchestrator has it pending already.
  const learnFile = async () => {
    const file = join(work, `learn-${randomUUID()}.json`);
    const task = learnTask(ids);
    orchestrator.addTask('learnuplet', task.uuid, 'pending');
    await writeFile(file, JSON.stringify(task));
    return file;
  };
  // One state folder, as on an operator's host: task exec reuses podman info's answer there.
  const state = await mkdtemp(join(work, 'state-'));
  const taskExec = async (file, extra = []) => {
    return timed(cli, ['task', 'exec', '--json', '--state-dir', state, ...common, ...extra, file], {
      env,
    });
  };

  console.error('bench: building the images (not timed)');
  const first = JSON.parse((await taskExec(await learnFile())).out);
  if (first.status !== 'done')
    throw new Error(`the first learn task failed: ${JSON.stringify(first)}`);
  const image = (step) => first.steps.find((s) => s.step === step).note.split(' ')[0];
  const images = { workflow: image('build-workflow'), submission: image('build-submission') };

  console.error('bench: counting engine calls');
  const calls = await countCalls(taskExec, learnFile, ids, orchestrator);

  console.error(`bench: ${runs} paired runs of a cached learn task against the floor`);
  const floor = await floorScript(images, storage, ids);
  const worker = [];
  const bare = [];
  for (let i = 0; i < runs; i++) {
    const one = async () => {
      const r = await taskExec(await learnFile());
      if (JSON.parse(r.out).status !== 'done')
        throw new Error(`a timed learn task failed: ${r.out}`);
      worker.push(r);
    };
    const two = async () => bare.push(await timed('bash', floor, { env }));
    if (i % 2) await two().then(one);
    else await one().then(two);
  }

  if (only === 'overhead') {
    printTable(overheadRows(worker, bare, calls));
    return;
  }

  console.error('bench: start-up');
  const startup = {};
  for (const flag of ['--version', '--help']) {
    const times = [];
    for (let i = 0; i < runs; i++) times.push((await timed(cli, [flag])).wall);
    startup[flag] = median(times);
  }

  console.error(`bench: staging ${stagingMib} MiB`);
  const staging = await measureStaging(storage, ids, env);

  console.error(`bench: a ${stagingMib} MiB set staged, then from the data cache`);
  const cached = await measureCachedStaging(storage, env);

  console.error('bench: sized filesystems');
  const disk = await measureSizedDisk();

  console.error('bench: untrusted builds on a 1 GiB base');
  const big = engine === 'podman' ? await measureBigBase() : undefined;

  console.error('bench: 4 learn tasks at once in one worker');
  const four = await fourAtOnce(cli, env, common, nsqd, orchestrator, ids);

  const rows = [
    ...overheadRows(worker, bare, calls),
    [
      `staging ${stagingMib} MiB into a volume`,
      '>= 0.8x the floor',
      `${staging.floorMiBs.toFixed(0)} MiB/s`,
      `${staging.workerMiBs.toFixed(0)} MiB/s`,
      `${(staging.workerMiBs / staging.floorMiBs).toFixed(2)}x`,
    ],
    [`peak RSS, staging ${stagingMib} MiB`, '< 150 MB', '', `${staging.rssMiB.toFixed(0)} MiB`, ''],
    cacheRow(cached),
    [
      'peak RSS, run with 4 learn tasks at once',
      '< 150 MB',
      '',
      `${four.rssMiB.toFixed(0)} MiB`,
      `4 tasks in ${four.wall.toFixed(1)} s`,
    ],
    ['compute-worker --version', '< 0.30 s', '', `${startup['--version'].toFixed(2)} s`, ''],
    ['compute-worker --help', '< 0.30 s', '', `${startup['--help'].toFixed(2)} s`, ''],
    [
      'sized filesystem of a step (20g): make + mount',
      '< 0.10 s',
      '',
      `${(disk.make * 1000).toFixed(0)} ms`,
      `release ${(disk.release * 1000).toFixed(0)} ms`,
    ],
    ...(big ? bigBaseRows(big) : []),
    [
      'builds in a second task of the same workflow and algo',
      '0',
      '',
      `${calls.builds}`,
      calls.cached ? 'both images cached' : 'NOT cached',
    ],
  ];
  printTable(rows);
}

/** The untrusted build rows on a 1 GiB base (measureBigBase). */
function bigBaseRows(big) {
  return [
    [
      'untrusted build, new submission on a 1 GiB base',
      '<= 3x trusted + 1 s',
      `${big.trusted.toFixed(2)} s`,
      `${big.untrusted.toFixed(2)} s`,
      `trusted is the floor; first one ${big.first.toFixed(1)} s (goal < 15 s)`,
    ],
    [
      'base store growth, second submission on that base',
      '< the base (1 GiB)',
      '',
      `${(big.growth / MIB).toFixed(1)} MiB`,
      big.user ? `build user ${big.user}` : 'no build user',
    ],
  ];
}

function printTable(rows) {
  console.log(
    `\ncompute-worker benchmark: ${engine}${runc ? ' (runc)' : ''}, median of ${runs} runs\n`,
  );
  console.log(table(['figure', 'goal', 'floor', 'worker', 'ratio / note'], rows));
}

/** A cached learn task against the floor, wall and CPU, and the engine calls it makes. */
function overheadRows(worker, bare, calls) {
  const w = median(worker.map((r) => r.wall));
  const f = median(bare.map((r) => r.wall));
  const wc = median(worker.map((r) => r.cpu));
  const fc = median(bare.map((r) => r.cpu));
  return [
    [
      'learn task, images cached (wall)',
      '<= 1.10x the floor',
      `${f.toFixed(2)} s`,
      `${w.toFixed(2)} s`,
      `${(w / f).toFixed(2)}x`,
    ],
    [
      'learn task, CPU of the CLIs',
      '<= 1.3x the floor',
      `${fc.toFixed(2)} s`,
      `${wc.toFixed(2)} s`,
      `${(wc / fc).toFixed(2)}x`,
    ],
    [
      'engine calls, learn task',
      '',
      `${calls.floorLearn}`,
      `${calls.learn.total}`,
      verbs(calls.learn),
    ],
    ['engine calls, predict task', '', '', `${calls.predict.total}`, verbs(calls.predict)],
  ];
}

function verbs(count) {
  return Object.entries(count.byVerb)
    .sort((a, b) => b[1] - a[1])
    .map(([verb, n]) => `${n} ${verb}`)
    .join(', ');
}

function table(head, rows) {
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) => `| ${r.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
  return [line(head), line(widths.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

async function measureSizedDisk() {
  const dist = (file) => import(pathToFileURL(join(root, 'dist/src/engine', file)).href);
  const { createSizedDisk } = await dist('sized-disk.js');
  const { releaseSizedDisks } = await dist('sized-disk-release.js');
  const make = [];
  const release = [];
  for (let i = 0; i < runs; i++) {
    const dir = await mkdtemp(join(work, 'disk-'));
    let started = performance.now();
    await createSizedDisk(dir, 'disk-train', 20 * 1024 ** 3);
    make.push((performance.now() - started) / 1000);
    started = performance.now();
    await releaseSizedDisks(dir);
    release.push((performance.now() - started) / 1000);
    await rm(dir, { recursive: true, force: true });
  }
  return { make: median(make), release: median(release) };
}

async function measureBigBase() {
  const dist = (file) => import(pathToFileURL(join(root, 'dist/src', file)).href);
  const { createEngine } = await dist('container-engine.js');
  const { contextTarGz } = await dist('engine/probe-context.js');
  const { baseStoreFor } = await dist('build/store.js');
  const { findBuildUser } = await dist('build/user.js');
  const { execEngineRaw } = await dist('engine/exec.js');
  const tag = randomUUID().slice(0, 8);
  const base = `localhost/cw-bench-big-${tag}:1`;
  const rootfs = join(work, 'big-rootfs');
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  await exec('cp', ['/bin/busybox', join(rootfs, 'bin/busybox')]);
  await exec('ln', ['-s', 'busybox', join(rootfs, 'bin/sh')]);
  await exec('sh', ['-c', `head -c ${1024 * MIB} /dev/urandom > ${join(rootfs, 'blob')}`]);
  await exec('tar', ['-C', rootfs, '-cf', join(work, 'big.tar'), '.']);
  await rm(rootfs, { recursive: true, force: true });
  await exec('podman', ['import', join(work, 'big.tar'), base]);
  await rm(join(work, 'big.tar'), { force: true });
  const options = {
    engine: 'podman',
    ...(runc ? { ociRuntime: 'runc' } : {}),
    buildTimeoutMs: 600_000,
    callTimeoutMs: 120_000,
  };
  const worker = await createEngine(options);
  const user = await findBuildUser('auto');
  const ctx = { cli: { name: 'podman', path: worker.info.path }, info: worker.info, options };
  const bases = await baseStoreFor(ctx, user);
  const built = [];
  cleanups.push(async () => {
    for (const image of built)
      await exec('podman', ['rmi', '--force', image], { allowFailure: true });
    await execEngineRaw(bases.owner.cli, ['rmi', base], { timeoutMs: 120_000 });
    await exec('podman', ['rmi', base], { allowFailure: true });
  });
  const build = async (role, n) => {
    const context = await contextTarGz({
      Containerfile: `FROM ${base}\nRUN echo ${tag}-${n} > /made\n`,
    });
    const started = performance.now();
    const { Readable } = await import('node:stream');
    const result = await worker.buildImage({ role, context: Readable.from([context]), labels: {} });
    built.push(result.image);
    return (performance.now() - started) / 1000;
  };
  const du = async () =>
    Number((await exec('du', ['-s', '--block-size=1', bases.spec.root])).out.split('\t')[0]);
  const first = await build('submission', 0);
  const before = await du();
  const untrusted = [];
  const trusted = [];
  for (let i = 1; i <= runs; i++) {
    untrusted.push(await build('submission', i));
    trusted.push(await build('workflow', i));
  }
  const growth = (await du()) - before;
  // The base stays in the base store until the cleanup above.
  return {
    first,
    untrusted: median(untrusted),
    trusted: median(trusted),
    growth,
    user: user?.name,
  };
}

async function seed(storage) {
  const ids = Object.fromEntries(
    [
      'workflow',
      'algo',
      'train1',
      'train2',
      'test',
      'predict',
      'trainTar',
      'testTar',
      'predTar',
      'big',
      'bigTar',
    ].map((k) => [k, randomUUID()]),
  );
  const pack = async (dir) => {
    const out = join(work, `${dir}.tar.gz`);
    await exec('sh', ['examples/pack-context.sh', `examples/${dir}`, out]);
    return readFile(out);
  };
  storage.seed('problem', ids.workflow, { blob: await pack('problem') });
  storage.seed('algo', ids.algo, { blob: await pack('submission') });
  const data = (name) => readFile(join(root, 'examples/data', name));
  storage.seed('data', ids.train1, { blob: await data('train-1.csv') });
  storage.seed('data', ids.train2, { blob: await data('train-2.csv') });
  storage.seed('data', ids.test, { blob: await data('test.csv') });
  storage.seed('data', ids.predict, { blob: await data('predict.csv') });
  // The floor's inputs: the same files as tar archives, named as the worker names them.
  const tarOf = async (name, files, dirs = []) => {
    const dir = join(work, `tar-${name}`);
    await mkdir(join(dir, ...dirs), { recursive: true });
    for (const [file, uuid] of files) await writeFile(join(dir, uuid), await data(file));
    const out = join(work, `${name}.tar`);
    await exec('tar', ['-cf', out, '--owner=1000', '--group=1000', '-C', dir, '.']);
    return { file: out };
  };
  storage.seed('data', ids.trainTar, {
    blob: await tarOf(
      'train',
      [
        ['train-1.csv', ids.train1],
        ['train-2.csv', ids.train2],
      ],
      ['pred'],
    ),
  });
  storage.seed('data', ids.testTar, { blob: await tarOf('test', [['test.csv', ids.test]]) });
  storage.seed('data', ids.predTar, { blob: await tarOf('pred', [], ['pred']) });
  return ids;
}

function learnTask(ids) {
  return {
    uuid: randomUUID(),
    problem: ids.workflow,
    workflow: ids.workflow,
    algo: ids.algo,
    train_data: [ids.train1, ids.train2],
    test_data: [ids.test],
    model_start: null,
    model_end: randomUUID(),
    rank: 0,
    worker: null,
    status: 'todo',
  };
}

/** Engine calls of a learn and a predict task, through a shim that logs each call's verb. */
async function countCalls(taskExec, learnFile, ids, orchestrator) {
  const log = join(work, 'calls.log');
  const shim = join(work, engine);
  const real = (await exec('sh', ['-c', `command -v ${engine}`])).out.trim();
  await writeFile(shim, `#!/bin/sh\nprintf '%s\\n' "$*" >>'${log}'\nexec '${real}' "$@"\n`);
  await chmod(shim, 0o755);
  const count = async (file) => {
    await rm(log, { force: true });
    const result = JSON.parse((await taskExec(file, ['--engine-path', shim])).out);
    if (result.status !== 'done')
      throw new Error(`a counted task failed: ${JSON.stringify(result)}`);
    const lines = (await readFile(log, 'utf8')).trim().split('\n');
    const byVerb = {};
    for (const line of lines) {
      const words = line.split(' ');
      const verb = ['volume', 'image', 'container', 'system'].includes(words[0])
        ? `${words[0]} ${words[1]}`
        : words[0];
      byVerb[verb] = (byVerb[verb] ?? 0) + 1;
    }
    return { result, total: lines.length, byVerb };
  };
  const learnJson = await learnFile();
  const learn = await count(learnJson);
  const task = JSON.parse(await readFile(learnJson, 'utf8'));
  const predictFile = join(work, 'predict.json');
  const predictUuid = randomUUID();
  orchestrator.addTask('preduplet', predictUuid, 'pending');
  await writeFile(
    predictFile,
    JSON.stringify({
      uuid: predictUuid,
      problem: ids.workflow,
      workflow: ids.workflow,
      model: task.model_end,
      data: ids.predict,
      worker: null,
      status: 'todo',
    }),
  );
  const predict = await count(predictFile);
  const cachedSteps = learn.result.steps.filter((s) => s.step.startsWith('build-'));
  return {
    learn,
    predict,
    builds: learn.byVerb.build ?? 0,
    cached: cachedSteps.length === 2 && cachedSteps.every((s) => s.note.endsWith('(cached)')),
    floorLearn: engine === 'podman' ? 7 + 3 + 3 + 2 + 1 : 7 + 3 + 3 + 1 + 1,
  };
}

/** The arguments of `bash` to run the floor script, with the worker's own hardening flags. */
async function floorScript(images, storage, ids) {
  const { limitArgs } = await import(pathToFileURL(join(root, 'dist/src/engine/args.js')).href);
  const { DEFAULT_LIMITS } = await import(
    pathToFileURL(join(root, 'dist/src/engine/limits.js')).href
  );
  const flags = [
    ...(runc ? ['--runtime', 'runc'] : []),
    ...limitArgs({ name: engine, unenforcedLimits: [] }, DEFAULT_LIMITS),
  ];
  const file = join(work, 'floor-flags');
  await writeFile(file, `${flags.join('\n')}\n`);
  const url = (uuid) => `${storage.url}/data/${uuid}/blob`;
  return [
    join(root, 'scripts/bench-floor.sh'),
    ...[engine, file, images.workflow, images.submission],
    ...[url(ids.trainTar), url(ids.testTar), url(ids.predTar)],
  ];
}

async function measureStaging(storage, ids, env) {
  const big = join(work, 'big');
  await mkdir(big);
  const chunk = Buffer.alloc(MIB, '0.123,4.567,8.901,2.345,alpha\n');
  const { open } = await import('node:fs/promises');
  const handle = await open(join(big, ids.big), 'w');
  for (let i = 0; i < stagingMib; i++) await handle.write(chunk);
  await handle.close();
  storage.seed('data', ids.big, { blob: { file: join(big, ids.big) } });
  // The stand-in takes the blob's digest once, before it first sends it: not timed.
  await storage.object('data', ids.big).digest;
  const bigTar = join(work, 'big.tar');
  await exec('tar', ['-cf', bigTar, '-C', big, ids.big]);
  storage.seed('data', ids.bigTar, { blob: { file: bigTar } });

  const child = JSON.stringify({
    engine,
    runc,
    storage: { host: storage.host, port: storage.port, password: PASSWORD },
    uuid: ids.big,
  });
  // With the node flags the worker runs with (bin/run.js's first line).
  const shebang = (await readFile(join(root, 'bin/run.js'), 'utf8')).split('\n')[0];
  const nodeFlags = shebang.split(/\s+/).filter((word) => word.startsWith('--'));
  const workerOnce = async () => {
    const staged = await timed(
      process.execPath,
      [...nodeFlags, fileURLToPath(import.meta.url), '--stage-child', child],
      { env },
    );
    return { ms: JSON.parse(staged.out).ms, rssMiB: staged.rssMiB };
  };
  const floorOnce = async () => {
    const volume = (await exec('podman', ['volume', 'create'])).out.trim();
    try {
      const started = process.hrtime.bigint();
      await exec(
        'bash',
        [
          '-c',
          'set -o pipefail; curl -sSf -u "$BENCH_AUTH" "$1" | podman volume import "$2" -',
          'floor',
          `${storage.url}/data/${ids.bigTar}/blob`,
          volume,
        ],
        { env: { ...env, BENCH_AUTH: `u:${PASSWORD}` } },
      );
      return Number(process.hrtime.bigint() - started) / 1e6;
    } finally {
      await exec('podman', ['volume', 'rm', '--force', volume]);
    }
  };
  // Paired runs, alternating which goes first, as for the learn task.
  const workerRuns = [];
  const floorRuns = [];
  for (let i = 0; i < runs; i++) {
    const one = async () => workerRuns.push(await workerOnce());
    // docker has no volume import: no floor to compare with
    const two = async () => engine === 'podman' && floorRuns.push(await floorOnce());
    if (i % 2) await two().then(one);
    else await one().then(two);
  }
  const ms = median(workerRuns.map((r) => r.ms));
  const floorMs = engine === 'podman' ? median(floorRuns) : ms;
  await rm(big, { recursive: true, force: true });
  await rm(bigTar, { force: true });
  const mib = stagingMib;
  return {
    workerMiBs: mib / (ms / 1000),
    floorMiBs: mib / (floorMs / 1000),
    rssMiB: Math.max(...workerRuns.map((r) => r.rssMiB)),
  };
}

/** The first task's staging of a set against the second's, the cache on. */
function cacheRow(cached) {
  return [
    `second-task staging of a ${stagingMib} MiB set`,
    '< 0.1x the first',
    `${(cached.firstMs / 1000).toFixed(2)} s`,
    `${(cached.secondMs / 1000).toFixed(3)} s`,
    `${(cached.secondMs / cached.firstMs).toFixed(3)}x (the floor is the first task's)`,
  ];
}

/**
 * --staging-mib as a train set, staged by a task with --data-cache-size on and then by a
 * second task on the same cache folder: each in a process of its own, as two task execs.
 */
async function measureCachedStaging(storage, env) {
  const dir = join(work, 'cached-set');
  await mkdir(dir, { recursive: true });
  const uuid = randomUUID();
  const file = join(dir, uuid);
  const chunk = Buffer.alloc(MIB, '0.123,4.567,8.901,2.345,alpha\n');
  const { open } = await import('node:fs/promises');
  const handle = await open(file, 'w');
  for (let i = 0; i < stagingMib; i++) await handle.write(chunk);
  await handle.close();
  storage.seed('data', uuid, { blob: { file } });
  await storage.object('data', uuid).digest;
  const shebang = (await readFile(join(root, 'bin/run.js'), 'utf8')).split('\n')[0];
  const nodeFlags = shebang.split(/\s+/).filter((word) => word.startsWith('--'));
  const once = async (cacheDir) => {
    const child = JSON.stringify({
      engine,
      runc,
      storage: { host: storage.host, port: storage.port, password: PASSWORD },
      uuid,
      cacheDir,
      maxBytes: 2 * stagingMib * MIB,
    });
    const out = await exec(
      process.execPath,
      [...nodeFlags, fileURLToPath(import.meta.url), '--cache-child', child],
      { env },
    );
    return JSON.parse(out.out);
  };
  const first = [];
  const second = [];
  try {
    for (let i = 0; i < runs; i++) {
      const cacheDir = await mkdtemp(join(work, 'data-cache-'));
      try {
        const cold = await once(cacheDir);
        const warm = await once(cacheDir);
        if (cold.reused || !warm.reused) throw new Error('the data cache did not reuse the set');
        first.push(cold.ms);
        second.push(warm.ms);
      } finally {
        await removeCacheVolumes(cacheDir);
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return { firstMs: median(first), secondMs: median(second) };
}

/** The volumes a cache folder's entries name, then the folder. */
async function removeCacheVolumes(cacheDir) {
  const { readdir } = await import('node:fs/promises');
  const entries = await readdir(join(cacheDir, 'entries')).catch(() => []);
  for (const name of entries.filter((n) => n.endsWith('.json'))) {
    const entry = JSON.parse(await readFile(join(cacheDir, 'entries', name), 'utf8'));
    await exec(engine, ['volume', 'rm', '--force', entry.volume]);
  }
  await rm(cacheDir, { recursive: true, force: true });
}

/** What a staging child works with: the worker's built modules, its storage client and engine. */
async function childParts(options) {
  const dist = (file) => import(pathToFileURL(join(root, 'dist/src', file)).href);
  const { HttpStorageClient } = await dist('clients/storage.js');
  const { createEngine } = await dist('container-engine.js');
  const { DEFAULT_LIMITS } = await dist('engine/limits.js');
  const storage = new HttpStorageClient({
    host: options.storage.host,
    port: options.storage.port,
    user: 'u',
    password: options.storage.password,
  });
  const engine = await createEngine({
    engine: options.engine,
    ociRuntime: options.runc ? 'runc' : undefined,
    buildTimeoutMs: 600_000,
    callTimeoutMs: 600_000,
  });
  return { storage, engine, DEFAULT_LIMITS, dist };
}

/** In its own process: a task's staging of one train set with the data cache on. */
async function cacheChild(options) {
  const { storage, engine, DEFAULT_LIMITS, dist } = await childParts(options);
  const { stageDataSet } = await dist('tasks/data-sets.js');
  const runId = randomUUID();
  const labels = { 'compute-worker.bench': runId };
  const tmp = await mkdtemp(join(tmpdir(), 'cw-bench-cache-'));
  const scope = { runId, labels, tmp, releases: [], disks: new Map() };
  try {
    const env = {
      engine,
      storage,
      limits: DEFAULT_LIMITS,
      workerId: randomUUID(),
      dataCache: { dir: options.cacheDir, maxBytes: options.maxBytes },
    };
    const run = { signal: new AbortController().signal };
    const started = process.hrtime.bigint();
    const set = await stageDataSet(env, run, scope, 'train', {
      uuids: [options.uuid],
      dirs: ['pred'],
    });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    process.stdout.write(JSON.stringify({ ms, reused: set.reused, shared: set.shared }));
  } finally {
    for (const release of scope.releases) release();
    await engine.removeByLabels(labels);
    await storage.close();
    await rm(tmp, { recursive: true, force: true });
  }
}

/** In its own process: the worker's staging of one data blob from storage into a new volume. */
async function stageChild(options) {
  const { storage, engine, DEFAULT_LIMITS, dist } = await childParts(options);
  const { stageFiles } = await dist('tasks/staging.js');
  const labels = { 'compute-worker.bench': randomUUID() };
  const volume = await engine.createVolume(labels);
  const tmp = await mkdtemp(join(tmpdir(), 'cw-bench-stage-'));
  try {
    const env = { engine, storage, limits: DEFAULT_LIMITS };
    const run = { signal: new AbortController().signal };
    const started = process.hrtime.bigint();
    await stageFiles(env, run, volume, [{ kind: 'data', uuid: options.uuid, name: 'train.csv' }], {
      tmp,
    });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    process.stdout.write(JSON.stringify({ ms }));
  } finally {
    await engine.removeByLabels(labels);
    await storage.close();
    await rm(tmp, { recursive: true, force: true });
  }
}

/** `compute-worker run` with --learn-parallelism 4 given 4 learn tasks at once; its peak RSS. */
async function fourAtOnce(cli, env, common, nsqd, orchestrator, ids) {
  const state = await mkdtemp(join(work, 'state-'));
  const tasks = [1, 2, 3, 4].map(() => learnTask(ids));
  let child;
  const done = () =>
    tasks.every((t) => orchestrator.requests.some((r) => r.path === `/learndone/${t.uuid}`));
  const running = timed(
    cli,
    ['run', ...common, '--state-dir', state, '--nsqd-tcp-addresses', nsqd.tcpAddress],
    {
      env: { ...env, COMPUTE_WORKER_LEARN_PARALLELISM: '4' },
      onSpawn: (c) => {
        child = c;
      },
      allowFailure: true,
    },
  );
  const started = Date.now();
  for (const task of tasks) nsqd.publish('train', JSON.stringify(task));
  while (!done()) {
    if (Date.now() - started > 600_000)
      throw new Error('4 learn tasks did not end within 10 minutes');
    await new Promise((r) => setTimeout(r, 200));
  }
  const wall = (Date.now() - started) / 1000;
  // The worker is /usr/bin/time's child: it gets the SIGTERM, stops cleanly, and time reports.
  const pid = Number((await exec('pgrep', ['-P', String(child.pid)])).out.trim().split('\n')[0]);
  process.kill(pid, 'SIGTERM');
  const result = await running;
  return { rssMiB: result.rssMiB, wall };
}
