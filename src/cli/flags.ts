import * as Flags from '@oclif/core/flags';
import { parseDuration } from '../config/duration.js';
import { parseLookupdAddress, parseNsqdAddress } from '../config/nsq-address.js';
import { parseSize } from '../config/size.js';
import { DEFAULT_LIMITS } from '../engine/limits.js';
import { parseGpuSelection } from '../gpu/pool.js';
import { DEFAULT_RETRY_POLICY } from '../tasks/outcome.js';
import {
  asUsage,
  durationDefault,
  durationFlag,
  positiveNumberFlag,
  sizeDefault,
  sizeFlag,
} from './flag-types.js';

const env = (name: string) => `COMPUTE_WORKER_${name}`;

/** Which engine, and how builds run. */
export const engineFlags = {
  engine: Flags.option({
    options: ['podman', 'docker'] as const,
    helpGroup: 'ENGINE',
    description: 'Container engine CLI to drive. Default: podman when on PATH, else docker.',
    env: env('ENGINE'),
  })(),
  'engine-path': Flags.string({
    helpGroup: 'ENGINE',
    description: 'Path of the engine CLI binary, when it is not the one on PATH.',
    env: env('ENGINE_PATH'),
  }),
  'oci-runtime': Flags.string({
    helpGroup: 'ENGINE',
    description:
      'OCI runtime passed to the engine as --runtime (runc, crun, runsc, ...). Needed where the default runtime cannot start containers, e.g. crun on hybrid cgroups.',
    env: env('OCI_RUNTIME'),
  }),
  'docker-timeout': durationFlag({
    helpGroup: 'ENGINE',
    description: 'Bound for engine work other than the submission: builds and the workflow steps.',
    ...durationDefault(parseDuration('15m')),
    env: env('DOCKER_TIMEOUT'),
  }),
  'build-timeout': durationFlag({
    helpGroup: 'ENGINE',
    description: 'Bound for one image build; a stuck build is killed. Default: --docker-timeout.',
    env: env('BUILD_TIMEOUT'),
  }),
  'workflow-build-policy': Flags.option({
    options: ['trusted', 'strict'] as const,
    helpGroup: 'ENGINE',
    description:
      'How the problem\'s workflow Containerfile is checked before it is built: trusted refuses what reaches the host or its network (RUN --network, cache/secret/ssh mounts, ADD of a URL, "$" in flags); strict applies the submissions\' allowlist. Submissions are always checked strictly.',
    default: 'trusted',
    env: env('WORKFLOW_BUILD_POLICY'),
  })(),
  'build-memory': sizeFlag({
    helpGroup: 'ENGINE',
    description:
      "Memory limit of an untrusted build's RUN steps (no extra swap); past it the build fails as out of memory. Default: --memory.",
    env: env('BUILD_MEMORY'),
  }),
  'build-cpus': positiveNumberFlag({
    helpGroup: 'ENGINE',
    description: "CPUs an untrusted build's RUN steps may use. Default: --cpus.",
    env: env('BUILD_CPUS'),
  }),
  'build-pids-limit': Flags.integer({
    helpGroup: 'ENGINE',
    description:
      "Most processes and threads of an untrusted build's RUN steps together (rootful podman: the worker's own cgroup of the build, as podman build has no --pids-limit). Default: --pids-limit.",
    min: 16,
    env: env('BUILD_PIDS_LIMIT'),
  }),
  'build-userns': Flags.string({
    helpGroup: 'ENGINE',
    description:
      "Runs an untrusted build (rootful podman) in a user namespace, so its root is not the host's: START:COUNT, a host uid/gid range its root and users map to, or auto (the `containers` entry of /etc/subuid and /etc/subgid, else 2000000000:65536). Off by default: buildah 1.28 (Debian 12's podman 4.3) writes the mapped host ids into the image, so files the build creates belong to ids like 2000001000 when the image runs. Rootless podman builds already run in the user's namespace.",
    env: env('BUILD_USERNS'),
  }),
  'image-cache-size': sizeFlag({
    helpGroup: 'ENGINE',
    description:
      'Bound of the images this worker built (found by its worker label). After each task and at start-up, the least recently used images that no running task uses are removed until the rest fit, with the dangling layers of failed builds.',
    ...sizeDefault(parseSize('50g')),
    env: env('IMAGE_CACHE_SIZE'),
  }),
  'data-cache-size': sizeFlag({
    helpGroup: 'ENGINE',
    description:
      "Bound of the host's cache of staged data sets: a task's train set and hidden test set (a predict task's test file) are staged once into a read-only volume that later tasks mount again while storage still gives each blob the same digest (or strong ETag and length). The least recently used sets no running task mounts are removed to make room; a set larger than the bound is staged per task. Shared by every worker with the same --data-cache-dir. 0 turns it off.",
    ...sizeDefault(0),
    env: env('DATA_CACHE_SIZE'),
  }),
  'data-cache-dir': Flags.string({
    helpGroup: 'ENGINE',
    description:
      "Folder of the data cache's index, locks and leases, shared by the workers of the host (give them all the same one). Default: /var/lib/compute-worker/data-cache as root, else ~/.cache/compute-worker/data-cache (XDG_CACHE_HOME).",
    env: env('DATA_CACHE_DIR'),
  }),
  'engine-host': Flags.string({
    helpGroup: 'ENGINE',
    description:
      "URL of a remote engine that every engine call goes to: podman's service (podman --remote --url) or a docker daemon (docker -H), e.g. unix:///run/podman/podman.sock or ssh://user@host/run/podman/podman.sock. Default: CONTAINER_HOST (podman) or DOCKER_HOST (docker), else the local engine. Against a remote engine --disk-limit is not measured in volumes, --min-free-disk does not see its storage, and podman builds get no pids limit: the worker says so at start-up.",
    env: env('ENGINE_HOST'),
  }),
  'build-user': Flags.string({
    helpGroup: 'ENGINE',
    description:
      "The unprivileged host user whose rootless podman builds untrusted contexts (rootful podman, worker run as root), so a RUN step's root is that user in its own user namespace, not the host's root; the image is then moved into the worker's store. auto: the user cwbuild if it exists (with /etc/subuid and /etc/subgid entries), else builds run as the host's root; none: never. An explicit --build-userns takes precedence.",
    default: 'auto',
    env: env('BUILD_USER'),
  }),
};

/** Limits of every container the worker runs. All finite. */
export const limitFlags = {
  memory: sizeFlag({
    helpGroup: 'CONTAINER LIMITS',
    description: 'Memory limit of a container (swap is set equal: no extra swap).',
    ...sizeDefault(DEFAULT_LIMITS.memoryBytes),
    env: env('MEMORY'),
  }),
  cpus: positiveNumberFlag({
    helpGroup: 'CONTAINER LIMITS',
    description: 'CPUs a container may use.',
    default: DEFAULT_LIMITS.cpus,
    env: env('CPUS'),
  }),
  'pids-limit': Flags.integer({
    helpGroup: 'CONTAINER LIMITS',
    description: 'Most processes and threads a container may have.',
    default: DEFAULT_LIMITS.pidsLimit,
    min: 16,
    env: env('PIDS_LIMIT'),
  }),
  'tmpfs-size': sizeFlag({
    helpGroup: 'CONTAINER LIMITS',
    description: 'Size of the writable /tmp of a container (its root is read-only).',
    ...sizeDefault(DEFAULT_LIMITS.tmpfsBytes),
    env: env('TMPFS_SIZE'),
  }),
  'shm-size': sizeFlag({
    helpGroup: 'CONTAINER LIMITS',
    description: 'Size of /dev/shm of a container (data loaders often need more than 64m).',
    ...sizeDefault(DEFAULT_LIMITS.shmBytes),
    env: env('SHM_SIZE'),
  }),
  user: Flags.string({
    helpGroup: 'CONTAINER LIMITS',
    description: 'uid:gid the containers run as. Never root by default.',
    default: DEFAULT_LIMITS.user,
    env: env('USER'),
  }),
  'log-tail-lines': Flags.integer({
    helpGroup: 'CONTAINER LIMITS',
    description: 'Last lines of a container log kept for error reports.',
    default: 2000,
    min: 1,
    env: env('LOG_TAIL_LINES'),
  }),
  'disk-limit': sizeFlag({
    helpGroup: 'CONTAINER LIMITS',
    description:
      'Most a container step of a task may write into its volumes (model, predictions, ...); past it the task fails. As root with local rootful podman, each writing step gets a filesystem of this size; elsewhere the volumes are measured every 2s and the container is killed.',
    ...sizeDefault(parseSize('20g')),
    env: env('DISK_LIMIT'),
  }),
  'disk-bound': Flags.option({
    options: ['auto', 'poll'] as const,
    helpGroup: 'CONTAINER LIMITS',
    description:
      'How --disk-limit is held: auto gives each writing step a loop-mounted filesystem of that size where the host allows it (doctor says which), else measures every 2s; poll always measures.',
    default: 'auto' as const,
    env: env('DISK_BOUND'),
  })(),
  'container-userns': Flags.option({
    options: ['auto', 'off'] as const,
    helpGroup: 'CONTAINER LIMITS',
    description:
      "auto: with rootful podman, every container gets a user namespace of its own, 65536 host ids from the `containers` entry of /etc/subuid and /etc/subgid that no other container or user has (doctor, check userns, says whether this host can); elsewhere, or with off, containers share the engine's namespace.",
    default: 'auto' as const,
    env: env('CONTAINER_USERNS'),
  })(),
  'min-free-disk': sizeFlag({
    helpGroup: 'CONTAINER LIMITS',
    description:
      "The daemon takes no new task while the engine's storage or the worker's temp folder has less free space than this (the message is handed back to NSQ). Default: 2 x --disk-limit.",
    env: env('MIN_FREE_DISK'),
  }),
  'max-prediction-size': sizeFlag({
    helpGroup: 'CONTAINER LIMITS',
    description:
      "Most bytes of the submission's predictions read back: the prediction volumes copied for the workflow's scoring, and a predict task's prediction file. Never more than --disk-limit.",
    ...sizeDefault(parseSize('1g')),
    env: env('MAX_PREDICTION_SIZE'),
  }),
  'max-context-size': sizeFlag({
    helpGroup: 'CONTAINER LIMITS',
    description:
      "Most bytes a build context (the workflow's or a submission's .tar.gz) may hold unpacked, counted from each entry's size as the archive streams in, before anything is written past it; a larger context is the task's fault (BUILD_CONTEXT_REJECTED). Default: --disk-limit.",
    env: env('MAX_CONTEXT_SIZE'),
  }),
  'max-model-size': sizeFlag({
    helpGroup: 'CONTAINER LIMITS',
    description:
      'Most bytes of a model: the one a submission leaves (packed for upload) and a start model from storage, counted unpacked. Never more than --disk-limit, which a later step holding the model has.',
    ...sizeDefault(parseSize('10g')),
    env: env('MAX_MODEL_SIZE'),
  }),
};

/** How long the submission may run. */
export const timeoutFlags = {
  'learn-timeout': durationFlag({
    helpGroup: 'TIMEOUTS',
    description: 'After this delay, a learning task is timed out.',
    ...durationDefault(parseDuration('20m')),
    env: env('LEARN_TIMEOUT'),
  }),
  'predict-timeout': durationFlag({
    helpGroup: 'TIMEOUTS',
    description: 'After this delay, a prediction task is timed out.',
    ...durationDefault(parseDuration('20m')),
    env: env('PREDICT_TIMEOUT'),
  }),
};

function serviceFlags<S extends 'storage' | 'orchestrator'>(service: S, label: string) {
  const upper = service.toUpperCase();
  const host = Flags.string({
    helpGroup: 'SERVICES',
    description: `Host of the ${label} API (http:// or https:// prefix allowed). Leave blank to use the built-in local ${label}.`,
    default: '',
    env: env(`${upper}_HOST`),
  });
  const port = Flags.integer({
    helpGroup: 'SERVICES',
    description: `TCP port of the ${label} API.`,
    default: 80,
    min: 1,
    max: 65535,
    env: env(`${upper}_PORT`),
  });
  const user = Flags.string({
    helpGroup: 'SERVICES',
    description: `Basic Authentication user of the ${label} API.`,
    default: 'u',
    env: env(`${upper}_USER`),
  });
  const password = Flags.string({
    helpGroup: 'SERVICES',
    description: `Basic Authentication password of the ${label} API. Prefer --${service}-password-file or the environment: a flag shows in ps.`,
    default: 'p',
    env: env(`${upper}_PASSWORD`),
  });
  const passwordFile = Flags.string({
    helpGroup: 'SERVICES',
    description: `File holding the ${label} password (overrides --${service}-password).`,
    env: env(`${upper}_PASSWORD_FILE`),
  });
  return {
    [`${service}-host`]: host,
    [`${service}-port`]: port,
    [`${service}-user`]: user,
    [`${service}-password`]: password,
    [`${service}-password-file`]: passwordFile,
  } as Record<`${S}-host` | `${S}-user` | `${S}-password`, typeof host> &
    Record<`${S}-port`, typeof port> &
    Record<`${S}-password-file`, typeof passwordFile>;
}

export const serviceFlagSet = {
  ...serviceFlags('storage', 'storage'),
  ...serviceFlags('orchestrator', 'orchestrator'),
  'storage-dir': Flags.string({
    helpGroup: 'SERVICES',
    description:
      'Folder of the built-in local storage (used when --storage-host is blank). Default: <state-dir>/storage.',
    env: env('STORAGE_DIR'),
  }),
  'orchestrator-ledger': Flags.string({
    helpGroup: 'SERVICES',
    description:
      'JSON-lines file where the built-in local orchestrator records every report (used when --orchestrator-host is blank). Default: <state-dir>/orchestrator.jsonl.',
    env: env('ORCHESTRATOR_LEDGER'),
  }),
  'state-dir': Flags.string({
    helpGroup: 'SERVICES',
    description:
      'Folder of the worker id, the journal of tasks in progress and the local services. run locks it: each worker on a host needs its own. Default: /var/lib/compute-worker as root, else ~/.local/state/compute-worker.',
    env: env('STATE_DIR'),
  }),
};

/** GPUs for submissions: each task its own, by UUID. */
export const gpuFlags = {
  'learn-gpus': Flags.integer({
    helpGroup: 'GPUS',
    description:
      "GPUs given to the submission's container of each learn task, its own for as long as it runs. The workflow's containers get none.",
    default: 0,
    min: 0,
    env: env('LEARN_GPUS'),
  }),
  'predict-gpus': Flags.integer({
    helpGroup: 'GPUS',
    description: "GPUs given to the submission's container of each predict task.",
    default: 0,
    min: 0,
    env: env('PREDICT_GPUS'),
  }),
  gpus: Flags.string({
    helpGroup: 'GPUS',
    description:
      'The GPUs this worker may hand out: all, none, or indices or UUIDs (0,1 or GPU-…). Workers on one host split its GPUs with it. Start-up fails when the pool cannot serve every task slot at once. Default: all.',
    env: env('GPUS'),
    parse: async (input) => {
      parseGpuSelection(input);
      return input;
    },
  }),
  'gpu-cdi-kind': Flags.string({
    helpGroup: 'GPUS',
    description:
      "CDI kind of the GPU devices in the host's CDI specs (/etc/cdi, /var/run/cdi): podman gets --device KIND=UUID.",
    default: 'nvidia.com/gpu',
    env: env('GPU_CDI_KIND'),
  }),
};

/** Every flag that changes how a task runs: shared by `run` and `task exec`. */
export const taskFlags = {
  ...engineFlags,
  ...limitFlags,
  ...timeoutFlags,
  ...serviceFlagSet,
  ...gpuFlags,
};

/** The daemon's own flags: where NSQ is, how much runs at once, how it retries and stops. */
export const runFlags = {
  'nsqlookupd-urls': Flags.string({
    helpGroup: 'NSQ',
    description:
      'HTTP address of an nsqlookupd (host:port or URL). Repeatable, or comma-separated.',
    multiple: true,
    delimiter: ',',
    env: env('NSQLOOKUPD_URLS'),
    parse: async (input) => asUsage(() => parseLookupdAddress(input)),
  }),
  'nsqd-tcp-addresses': Flags.string({
    helpGroup: 'NSQ',
    description:
      'TCP address (host:port) of an nsqd to connect to directly, without nsqlookupd. Repeatable, or comma-separated.',
    multiple: true,
    delimiter: ',',
    env: env('NSQD_TCP_ADDRESSES'),
    parse: async (input) => asUsage(() => parseNsqdAddress(input)),
  }),
  'learn-parallelism': Flags.integer({
    helpGroup: 'NSQ',
    description:
      'Number of learning tasks this worker runs in parallel; 0 takes none (topic train is not subscribed to): a predict-only worker.',
    default: 1,
    min: 0,
    env: env('LEARN_PARALLELISM'),
  }),
  'predict-parallelism': Flags.integer({
    helpGroup: 'NSQ',
    description:
      'Number of prediction tasks this worker runs in parallel; 0 takes none (topic prediction is not subscribed to): a learn-only worker.',
    default: 1,
    min: 0,
    env: env('PREDICT_PARALLELISM'),
  }),
  'max-attempts': Flags.integer({
    helpGroup: 'RETRIES AND SHUTDOWN',
    description:
      "Deliveries of a task before it is reported failed, when the worker or its host is at fault (an internal error, the engine, a service down). The task's own faults fail at once.",
    default: DEFAULT_RETRY_POLICY.maxAttempts,
    min: 1,
    env: env('MAX_ATTEMPTS'),
  }),
  'retry-delay': durationFlag({
    helpGroup: 'RETRIES AND SHUTDOWN',
    description: 'Delay before the first retry; it doubles with each attempt, with jitter.',
    ...durationDefault(DEFAULT_RETRY_POLICY.baseDelayMs),
    env: env('RETRY_DELAY'),
  }),
  'retry-max-delay': durationFlag({
    helpGroup: 'RETRIES AND SHUTDOWN',
    description: 'Longest delay between two attempts.',
    ...durationDefault(DEFAULT_RETRY_POLICY.maxDelayMs),
    env: env('RETRY_MAX_DELAY'),
  }),
  'shutdown-grace': durationFlag({
    helpGroup: 'RETRIES AND SHUTDOWN',
    description:
      'On SIGTERM or SIGINT, how long running tasks may go on before they are cancelled and requeued. A second signal stops at once.',
    ...durationDefault(parseDuration('30s')),
    env: env('SHUTDOWN_GRACE'),
  }),
  'lookupd-poll-interval': durationFlag({
    helpGroup: 'NSQ',
    description:
      'How often nsqlookupd is asked for nsqd, and lost connections retried (at least 1s).',
    ...durationDefault(parseDuration('10s')),
    env: env('LOOKUPD_POLL_INTERVAL'),
  }),
  'log-format': Flags.option({
    options: ['auto', 'json', 'text'] as const,
    helpGroup: 'LOGS',
    description:
      'Log lines as JSON objects, or readable text; auto: text on a terminal, else JSON.',
    default: 'auto' as const,
    env: env('LOG_FORMAT'),
  })(),
  'log-level': Flags.option({
    options: ['debug', 'info', 'warn', 'error'] as const,
    helpGroup: 'LOGS',
    description: "Least important log lines shown (debug includes the containers' output).",
    default: 'info' as const,
    env: env('LOG_LEVEL'),
  })(),
  'task-log-size': sizeFlag({
    helpGroup: 'LOGS',
    description:
      "Most bytes kept of one task attempt's step output (its containers' and builds' lines, cleaned) in the state folder, for `task logs`; the rest is left out, and the cut is marked. 0 keeps none.",
    ...sizeDefault(parseSize('10m')),
    env: env('TASK_LOG_SIZE'),
  }),
  'task-log-retention': durationFlag({
    helpGroup: 'LOGS',
    description:
      "How long a task attempt's kept output stays in the state folder after it was last written; older output is removed at start and every hour.",
    default: parseDuration('7d'),
    defaultHelp: async () => '7d',
    env: env('TASK_LOG_RETENTION'),
  }),
  'metrics-address': Flags.string({
    helpGroup: 'METRICS',
    description:
      'Serve Prometheus metrics (/metrics) and health checks (/healthz, /readyz) over HTTP on HOST:PORT; a port alone listens on 127.0.0.1. Off by default.',
    helpValue: '<host:port>',
    env: env('METRICS_ADDRESS'),
  }),
};

/** Every long flag name, for reading command lines written for the original single-dash worker. */
export const knownFlagNames: ReadonlySet<string> = new Set([
  ...Object.keys(taskFlags),
  ...Object.keys(runFlags),
  'json',
  'type',
  'help',
  'version',
]);

/** Flags that may be given several times, each value kept (the others: the last one wins). */
export const repeatableFlagNames: ReadonlySet<string> = new Set(
  Object.entries({ ...taskFlags, ...runFlags })
    .filter(([, flag]) => (flag as { multiple?: boolean }).multiple === true)
    .map(([name]) => name),
);

/** Flags that take no value. */
export const booleanFlagNames: ReadonlySet<string> = new Set(['json', 'help', 'version']);
