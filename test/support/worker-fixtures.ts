import { randomUUID } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { OrchestratorServer } from './orchestrator-server.js';
import type { StorageServer } from './storage-server.js';

/**
 * Tasks for the daemon's tests whose duration and fate are chosen per task: the data
 * file of a task holds directives (`sleep 6`, `exit 3`) that the test submission obeys
 * before it writes its predictions. One workflow and one submission image serve every
 * test, built from byte-identical contexts, so the engine builds them once.
 */

const SUBMISSION_RUN = `#!/bin/sh
# -V /data -T train|predict: obeys "say TEXT", "spam N" (N numbered lines), "sleep N" and
# "exit N" lines of its input files.
set -eu
task=$4
case $task in
  train) inputs=/data/train ;;
  predict) inputs=/data/test ;;
  *) echo "unknown task $task" >&2; exit 2 ;;
esac
for f in "$inputs"/*; do
  [ -f "$f" ] || continue
  while read -r word arg; do
    case $word in
      say) echo "$arg" ;;
      spam) i=0; while [ "$i" -lt "$arg" ]; do echo "line $i of $arg"; i=$((i + 1)); done ;;
      sleep) echo "sleeping $arg s"; sleep "$arg" ;;
      exit) echo "asked to exit with $arg" >&2; exit "$arg" ;;
    esac
  done <"$f"
done
for f in "$inputs"/*; do
  [ -f "$f" ] || continue
  echo 1 >"$inputs/pred/\${f##*/}"
done
if [ "$task" = train ]; then
  for f in /data/test/*; do
    [ -f "$f" ] && echo 1 >"/data/test/pred/\${f##*/}"
  done
  echo trained >/data/model/model.txt
fi
echo "$task done"
`;

const WORKFLOW_RUN = `#!/bin/sh
# -T detarget|perf -i /hidden_data -s /submission_data
set -eu
case $2 in
  detarget)
    # Output that only the operator may read: the workflow sees the hidden targets.
    echo "workflow detarget: $(ls /hidden_data/test | wc -l) hidden test files"
    for f in /hidden_data/test/*; do
      [ -f "$f" ] && cp "$f" /submission_data/test/
    done ;;
  perf)
    scores() {
      sep=
      for f in "$1"/*; do
        [ -f "$f" ] || continue
        printf '%s"%s": 0.5' "$sep" "\${f##*/}"
        sep=', '
      done
    }
    printf '{"perf": 0.5, "train_perf": {%s}, "test_perf": {%s}}\\n' \\
      "$(scores /submission_data/train)" "$(scores /hidden_data/test)" \\
      >/hidden_data/perf/performance.json ;;
  *) echo "unknown task $2" >&2; exit 2 ;;
esac
`;

const CONTAINERFILE = (script: string, extraLines: string[] = []) => `FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]${extraLines.map((l) => `\n${l}`).join('')}
COPY ${script} /${script}
USER 1000:1000
ENTRYPOINT ["/bin/sh", "/${script}"]
`;

/** A reproducible .tar.gz (fixed order, times and owners) of the given files. */
async function packTarGz(
  files: Record<string, string | { copyOf: string; mode: number }>,
): Promise<Buffer> {
  const work = await mkdtemp(join(tmpdir(), 'cw-worker-ctx-'));
  try {
    const dir = join(work, 'ctx');
    await mkdir(dir);
    for (const [name, content] of Object.entries(files)) {
      const file = join(dir, name);
      if (typeof content === 'string') {
        await writeFile(file, content);
        await chmod(file, 0o644);
      } else {
        await copyFile(content.copyOf, file);
        await chmod(file, content.mode);
      }
    }
    const tar = join(work, 'ctx.tar');
    await execa(
      'tar',
      [
        '-C',
        dir,
        '--sort=name',
        '--format=gnu',
        '--mtime=@0',
        '--owner=0',
        '--group=0',
        '--numeric-owner',
        '-cf',
        tar,
        '.',
      ],
      { env: { LC_ALL: 'C' } },
    );
    await execa('gzip', ['-n', '-9', tar]);
    return await readFile(`${tar}.gz`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export interface WorkerFixtures {
  workflowUuid: string;
  algoUuid: string;
  modelUuid: string;
}

/** Puts the test workflow, submission and a model into storage under fresh uuids. */
export async function seedFixtures(storage: StorageServer): Promise<WorkerFixtures> {
  const busybox = { copyOf: '/bin/busybox', mode: 0o755 };
  const [workflow, submission, model] = await Promise.all([
    packTarGz({ Containerfile: CONTAINERFILE('run.sh'), 'run.sh': WORKFLOW_RUN, busybox }),
    packTarGz({ Containerfile: CONTAINERFILE('run.sh'), 'run.sh': SUBMISSION_RUN, busybox }),
    packTarGz({ 'model.txt': 'trained\n' }),
  ]);
  const fixtures = { workflowUuid: randomUUID(), algoUuid: randomUUID(), modelUuid: randomUUID() };
  storage.seed('problem', fixtures.workflowUuid, { blob: workflow });
  storage.seed('algo', fixtures.algoUuid, { blob: submission });
  storage.seed('model', fixtures.modelUuid, {
    blob: model,
    meta: { uuid: fixtures.modelUuid, algo: fixtures.algoUuid, timestamp_upload: 1 },
  });
  return fixtures;
}

/**
 * Puts a submission into storage (under `uuid`, a fresh one by default): the test one, with
 * `extraLines` after its first RUN step. Returns its uuid.
 */
export async function seedAlgo(
  storage: StorageServer,
  extraLines: string[] = [],
  uuid: string = randomUUID(),
): Promise<string> {
  const busybox = { copyOf: '/bin/busybox', mode: 0o755 };
  const blob = await packTarGz({
    Containerfile: CONTAINERFILE('run.sh', extraLines),
    'run.sh': SUBMISSION_RUN,
    busybox,
  });
  storage.seed('algo', uuid, { blob });
  return uuid;
}

export interface TaskBehaviour {
  /** Lines the submission prints, in order, before it sleeps or exits. */
  say?: string[];
  /** Numbered lines the submission prints ("line 0 of N", ...). */
  spam?: number;
  /** Seconds the submission sleeps. */
  sleep?: number;
  /** Exit code the submission ends with instead of succeeding. */
  exit?: number;
}

export interface SeededTask {
  uuid: string;
  /** The data uuid whose blob holds the directives. */
  data: string;
  /** The message body. */
  body: string;
}

function directives(b: TaskBehaviour): string {
  const lines = (b.say ?? []).map((line) => `say ${line}`);
  if (b.spam) lines.push(`spam ${b.spam}`);
  if (b.sleep) lines.push(`sleep ${b.sleep}`);
  if (b.exit !== undefined) lines.push(`exit ${b.exit}`);
  return `${lines.join('\n')}\n`;
}

/** A predict task (topic `prediction`): one container. Registered todo with the orchestrator. */
export function predictTask(
  storage: StorageServer,
  orchestrator: OrchestratorServer,
  fixtures: WorkerFixtures,
  behaviour: TaskBehaviour = {},
): SeededTask {
  const uuid = randomUUID();
  const data = randomUUID();
  storage.seed('data', data, { blob: directives(behaviour) });
  orchestrator.addTask('preduplet', uuid);
  const body = JSON.stringify({
    uuid,
    problem: fixtures.workflowUuid,
    workflow: fixtures.workflowUuid,
    model: fixtures.modelUuid,
    data,
    worker: null,
    status: 'todo',
    prediction_storage_uuid: null,
  });
  return { uuid, data, body };
}

/** A learn task (topic `train`): detarget, train, perf. Registered todo with the orchestrator. */
export function learnTask(
  storage: StorageServer,
  orchestrator: OrchestratorServer,
  fixtures: WorkerFixtures,
  behaviour: TaskBehaviour = {},
): SeededTask {
  const uuid = randomUUID();
  const data = randomUUID();
  const test = randomUUID();
  storage.seed('data', data, { blob: directives(behaviour) });
  storage.seed('data', test, { blob: 'label\n1\n' });
  orchestrator.addTask('learnuplet', uuid);
  const body = JSON.stringify({
    uuid,
    problem: fixtures.workflowUuid,
    workflow: fixtures.workflowUuid,
    algo: fixtures.algoUuid,
    train_data: [data],
    test_data: [test],
    model_start: null,
    model_end: randomUUID(),
    rank: 0,
    worker: null,
    status: 'todo',
  });
  return { uuid, data, body };
}
