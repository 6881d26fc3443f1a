import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { execa } from 'execa';
import tar from 'tar-stream';
import { HttpOrchestratorClient } from '../../src/clients/orchestrator.js';
import { HttpStorageClient } from '../../src/clients/storage.js';
import { createEngine } from '../../src/container-engine.js';
import { LABEL_TASK } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { EngineOptions } from '../../src/engine/types.js';
import { usernsFor } from '../../src/engine/userns-pool.js';
import { createLogger } from '../../src/log.js';
import { parseTask } from '../../src/schemas.js';
import type { TaskEnv, TaskEvent } from '../../src/tasks/context.js';
import { decideOutcome, ONE_SHOT } from '../../src/tasks/outcome.js';
import {
  executeTask,
  failedReportOf,
  reportFailure,
  type TaskReport,
} from '../../src/tasks/run-task.js';
import { trimImages } from '../../src/tasks/scope.js';
import { busyboxContext } from './busybox-context.js';
import { VARIANTS } from './engine-variants.js';
import { type OrchestratorServer, startOrchestratorServer } from './orchestrator-server.js';
import { type StorageServer, startStorageServer } from './storage-server.js';

/**
 * The world a learn or predict task runs in, for end-to-end tests: rootful podman with
 * runc, the strict storage and orchestrator stand-ins on 127.0.0.1, and build contexts
 * whose bytes are the same in every test file, so each image is built once and then
 * found by its digest.
 */

export const podman = VARIANTS['podman-rootful'];
export const podmanMissing = podman.unavailable();

const examples = fileURLToPath(new URL('../../examples/', import.meta.url));
export const exampleData = (name: string) => readFile(join(examples, 'data', name));

/** examples/<dir> packed by examples/pack-context.sh: reproducible bytes, so a cached image. */
export async function exampleContext(dir: 'problem' | 'submission'): Promise<Buffer> {
  const work = await mkdtemp(join(tmpdir(), 'cw-context-'));
  try {
    const out = join(work, 'context.tar.gz');
    await execa('sh', [join(examples, 'pack-context.sh'), join(examples, dir), out]);
    return await readFile(out);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * A busybox image that runs the scripts it is given as data, so that one image plays
 * every misbehaving submission or workflow a test needs: as a submission, `sh` runs each
 * /data/train/* (train) or /data/test/* (predict) file; as a workflow, detarget copies
 * the hidden test files as they are and perf runs each of them.
 */
const RUNNER = `set -eu
task=
while [ $# -gt 0 ]; do
  case $1 in -T) task=$2; shift 2 ;; *) shift ;; esac
done
run_all() { for f in "$1"/*; do if [ -f "$f" ]; then sh "$f"; fi; done; }
case $task in
  train) run_all /data/train ;;
  predict) run_all /data/test ;;
  detarget) cp /hidden_data/test/* /submission_data/test/ ;;
  perf) run_all /hidden_data/test ;;
  *) echo "runner: unknown task $task" >&2; exit 2 ;;
esac
`;

export function scriptRunnerContext(): Promise<Buffer> {
  return busyboxContext({
    // A confined build's RUN cannot create folders in `/`: /data comes with the skeleton.
    files: { 'runner.sh': RUNNER, 'skeleton/data/': '' },
    extraLines: [
      'RUN mkdir -p /tmp /data && chmod 1777 /tmp',
      'COPY runner.sh /runner/runner.sh',
      'USER 1000:1000',
      'ENTRYPOINT ["/bin/sh", "/runner/runner.sh"]',
    ],
  });
}

/** A .tar.gz of these files (a model as a submission would leave it, or a hostile one). */
export async function tarGz(files: Record<string, string | Buffer>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) {
    pack.entry({ name, size: Buffer.byteLength(content), mode: 0o644 }, content);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

/** The entries of a .tar.gz: name, owner and content. */
export async function readTarGz(
  archive: Buffer,
): Promise<{ name: string; uid: number; gid: number; type: string; content: string }[]> {
  const extract = tar.extract();
  const entries: { name: string; uid: number; gid: number; type: string; content: string }[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      const h = entry.header;
      entries.push({
        name: h.name,
        uid: h.uid ?? -1,
        gid: h.gid ?? -1,
        type: h.type ?? 'file',
        content: Buffer.concat(chunks).toString('utf8'),
      });
    }
  })();
  extract.end(gunzipSync(archive));
  await done;
  return entries;
}

/** Builds images ahead of the tests, so that concurrent tests find them cached. */
export async function prebuild(
  env: TaskEnv,
  contexts: [role: 'workflow' | 'submission', context: Buffer][],
): Promise<void> {
  await Promise.all(
    contexts.map(([role, context]) =>
      env.engine.buildImage({ role, context: Readable.from([context]), labels: {} }),
    ),
  );
}

/**
 * The script runner as both workflow and submission under one uuid (problem and algo),
 * built ahead; returns that uuid.
 */
export async function seedRunner(world: TaskWorld): Promise<string> {
  const { uuid } = newIds('uuid');
  const runner = await scriptRunnerContext();
  world.storage.seed('problem', uuid, { blob: runner });
  world.storage.seed('algo', uuid, { blob: runner });
  await prebuild(await world.env(), [
    ['workflow', runner],
    ['submission', runner],
  ]);
  return uuid;
}

/** A learn task's JSON: the script runner (seedRunner) as workflow and algo, new ids. */
export function learnTaskJson(runner: string, train: string[], test: string[]) {
  return {
    ...newIds('uuid', 'model_end'),
    workflow: runner,
    algo: runner,
    train_data: train,
    test_data: test,
    model_start: null,
    rank: 0,
  };
}

/** The steps of a learn task, in order (SPEC section 5). */
export const LEARN_STEPS = [
  'build-workflow',
  'build-submission',
  'stage',
  'detarget',
  'train',
  'perf',
  'upload',
  'report',
];

export interface TaskWorld {
  storage: StorageServer;
  orchestrator: OrchestratorServer;
  /** A TaskEnv on the stand-ins with its own empty tmpDir; fields can be overridden. */
  env(overrides?: Partial<TaskEnv>): Promise<TaskEnv>;
  close(): Promise<void>;
}

/** Stand-ins for storage and orchestrator, and one podman engine, shared by a file's tests. */
export async function startWorld(
  password = 'p',
  engineOptions: EngineOptions = podman.options,
): Promise<TaskWorld> {
  const storage = await startStorageServer({ password });
  const orchestrator = await startOrchestratorServer({ password });
  const engine = await createEngine(engineOptions);
  // As `run` and `task exec` have it: each container's own user namespace where it can be.
  const userns = await usernsFor('auto', engine);
  const clients: { close(): Promise<void> }[] = [];
  const tmpDirs: string[] = [];
  return {
    storage,
    orchestrator,
    async env(overrides = {}) {
      const tmpDir = await mkdtemp(join(tmpdir(), 'cw-task-test-'));
      tmpDirs.push(tmpDir);
      const storageClient = new HttpStorageClient(serviceOptions(storage, password));
      const orchestratorClient = new HttpOrchestratorClient(serviceOptions(orchestrator, password));
      clients.push(storageClient, orchestratorClient);
      return {
        engine,
        storage: storageClient,
        orchestrator: orchestratorClient,
        workerId: randomUUID(),
        limits: { ...DEFAULT_LIMITS, memoryBytes: 512 * 1024 ** 2 },
        learnTimeoutMs: 60_000,
        predictTimeoutMs: 60_000,
        workflowTimeoutMs: 60_000,
        logTailLines: 200,
        logTailBytes: 64 * 1024,
        tmpDir,
        diskLimitBytes: 20 * 1024 ** 3,
        minFreeDiskBytes: 0,
        maxPredictionBytes: 1024 ** 3,
        maxModelBytes: 10 * 1024 ** 3,
        ...userns,
        ...overrides,
      };
    },
    async close() {
      await Promise.all(clients.map((c) => c.close()));
      await Promise.all([storage.close(), orchestrator.close()]);
      await Promise.all(tmpDirs.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
}

export function serviceOptions(
  server: { host: string; port: number },
  password = 'p',
): { host: string; port: number; user: string; password: string } {
  return { host: `http://${server.host}`, port: server.port, user: 'u', password };
}

export interface Outcome {
  report: TaskReport;
  /** Every line the task's containers printed, in order. */
  logs: string[];
  events: TaskEvent[];
}

/**
 * Runs a task as `task exec` does: executeTask, reportFailure when it failed, then the
 * image cache's trim.
 * The task is registered with the orchestrator stand-in as taken by this worker.
 */
export async function runTask(
  world: TaskWorld,
  env: TaskEnv,
  json: Record<string, unknown>,
): Promise<Outcome> {
  const parsed = parseTask(json);
  world.orchestrator.addTask(
    parsed.type === 'learn' ? 'learnuplet' : 'preduplet',
    parsed.task.uuid,
    'pending',
  );
  const events: TaskEvent[] = [];
  const run = { signal: new AbortController().signal, onEvent: (e: TaskEvent) => events.push(e) };
  const log = createLogger({ level: 'warn', format: 'json' });
  const report = await executeTask(env, run, parsed, log);
  if (report.status === 'failed') {
    const outcome = decideOutcome(report, 1, ONE_SHOT);
    const failure = failedReportOf(
      env,
      report,
      outcome.action === 'done' ? { fault: 'worker', reason: 'done' } : outcome,
      1,
    );
    const reportError = await reportFailure(env, report, failure);
    if (reportError) throw reportError;
  }
  await trimImages(env, log);
  const logs = events.flatMap((e) => (e.type === 'log' ? [e.line] : []));
  return { report, logs, events };
}

/** The requests the orchestrator stand-in got for the done/failed report of a task. */
export function doneReports(world: TaskWorld, uuid: string) {
  return world.orchestrator.requests.filter(
    (r) => /^\/(learndone|preddone)\//.test(r.path) && r.path.endsWith(uuid),
  );
}

/** What a task left behind: its containers and volumes (by label) and its temp folders. */
export async function leftovers(taskUuid: string, tmpDir: string) {
  const filter = `label=${LABEL_TASK}=${taskUuid}`;
  const ps = await execa(podman.options.enginePath as string, [
    'ps',
    '-a',
    '-q',
    '--filter',
    filter,
  ]);
  const vols = await execa(podman.options.enginePath as string, [
    'volume',
    'ls',
    '-q',
    '--filter',
    filter,
  ]);
  const words = (text: string) => text.split(/\s+/).filter(Boolean);
  return {
    containers: words(ps.stdout),
    volumes: words(vols.stdout),
    tmp: await readdir(tmpDir),
  };
}

export const newIds = <K extends string>(...names: K[]): Record<K, string> =>
  Object.fromEntries(names.map((n) => [n, randomUUID()])) as Record<K, string>;
