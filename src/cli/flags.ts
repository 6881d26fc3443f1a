import { Flags } from '@oclif/core';
import { parseDuration } from '../config/duration.js';
import { parseSize } from '../config/size.js';
import { durationFlag, positiveNumberFlag, sizeFlag } from './flag-types.js';

const env = (name: string) => `COMPUTE_WORKER_${name}`;

/** Which engine, and how builds run. */
export const engineFlags = {
  engine: Flags.option({
    options: ['podman', 'docker'] as const,
    description: 'Container engine CLI to drive. Default: podman when on PATH, else docker.',
    env: env('ENGINE'),
  })(),
  'engine-path': Flags.string({
    description: 'Path of the engine CLI binary, when it is not the one on PATH.',
    env: env('ENGINE_PATH'),
  }),
  'oci-runtime': Flags.string({
    description:
      'OCI runtime passed to the engine as --runtime (runc, crun, runsc, ...). Needed where the default runtime cannot start containers, e.g. crun on hybrid cgroups.',
    env: env('OCI_RUNTIME'),
  }),
  'docker-timeout': durationFlag({
    description: 'Bound for engine work other than the submission: builds and the workflow steps.',
    default: parseDuration('15m'),
    defaultHelp: async () => '15m0s',
    env: env('DOCKER_TIMEOUT'),
  }),
  'build-timeout': durationFlag({
    description: 'Bound for one image build; a stuck build is killed. Default: --docker-timeout.',
    env: env('BUILD_TIMEOUT'),
  }),
};

/** Limits of every container the worker runs. All finite. */
export const limitFlags = {
  memory: sizeFlag({
    description: 'Memory limit of a container (swap is set equal: no extra swap).',
    default: parseSize('4g'),
    defaultHelp: async () => '4g',
    env: env('MEMORY'),
  }),
  cpus: positiveNumberFlag({
    description: 'CPUs a container may use.',
    default: 1,
    env: env('CPUS'),
  }),
  'pids-limit': Flags.integer({
    description: 'Most processes and threads a container may have.',
    default: 256,
    min: 16,
    env: env('PIDS_LIMIT'),
  }),
  'tmpfs-size': sizeFlag({
    description: 'Size of the writable /tmp of a container (its root is read-only).',
    default: parseSize('1g'),
    defaultHelp: async () => '1g',
    env: env('TMPFS_SIZE'),
  }),
  'shm-size': sizeFlag({
    description: 'Size of /dev/shm of a container (data loaders often need more than 64m).',
    default: parseSize('1g'),
    defaultHelp: async () => '1g',
    env: env('SHM_SIZE'),
  }),
  user: Flags.string({
    description: 'uid:gid the containers run as. Never root by default.',
    default: '1000:1000',
    env: env('USER'),
  }),
  'log-tail-lines': Flags.integer({
    description: 'Last lines of a container log kept for error reports.',
    default: 2000,
    min: 1,
    env: env('LOG_TAIL_LINES'),
  }),
};

/** How long the submission may run. */
export const timeoutFlags = {
  'learn-timeout': durationFlag({
    description: 'After this delay, a learning task is timed out.',
    default: parseDuration('20m'),
    defaultHelp: async () => '20m0s',
    env: env('LEARN_TIMEOUT'),
  }),
  'predict-timeout': durationFlag({
    description: 'After this delay, a prediction task is timed out.',
    default: parseDuration('20m'),
    defaultHelp: async () => '20m0s',
    env: env('PREDICT_TIMEOUT'),
  }),
};

function serviceFlags(service: 'storage' | 'orchestrator', label: string) {
  const upper = service.toUpperCase();
  return {
    [`${service}-host`]: Flags.string({
      description: `Host of the ${label} API (http:// or https:// prefix allowed). Leave blank to use the built-in local ${label}.`,
      default: '',
      env: env(`${upper}_HOST`),
    }),
    [`${service}-port`]: Flags.integer({
      description: `TCP port of the ${label} API.`,
      default: 80,
      min: 1,
      max: 65535,
      env: env(`${upper}_PORT`),
    }),
    [`${service}-user`]: Flags.string({
      description: `Basic Authentication user of the ${label} API.`,
      default: 'u',
      env: env(`${upper}_USER`),
    }),
    [`${service}-password`]: Flags.string({
      description: `Basic Authentication password of the ${label} API. Prefer --${service}-password-file or the environment: a flag shows in ps.`,
      default: 'p',
      env: env(`${upper}_PASSWORD`),
    }),
    [`${service}-password-file`]: Flags.string({
      description: `File holding the ${label} password (overrides --${service}-password).`,
      env: env(`${upper}_PASSWORD_FILE`),
    }),
  } as const;
}

export const serviceFlagSet = {
  ...(serviceFlags('storage', 'storage') as ServiceFlags<'storage'>),
  ...(serviceFlags('orchestrator', 'orchestrator') as ServiceFlags<'orchestrator'>),
  'storage-dir': Flags.string({
    description:
      'Folder of the built-in local storage (used when --storage-host is blank). Default: <state-dir>/storage.',
    env: env('STORAGE_DIR'),
  }),
  'orchestrator-ledger': Flags.string({
    description:
      'JSON-lines file where the built-in local orchestrator records every report (used when --orchestrator-host is blank). Default: <state-dir>/orchestrator.jsonl.',
    env: env('ORCHESTRATOR_LEDGER'),
  }),
  'state-dir': Flags.string({
    description:
      'Folder of the worker id, the journal of tasks in progress and the local services. Default: /var/lib/compute-worker as root, else ~/.local/state/compute-worker.',
    env: env('STATE_DIR'),
  }),
};

type ServiceFlags<S extends string> = {
  [K in `${S}-host` | `${S}-user` | `${S}-password`]: ReturnType<typeof Flags.string>;
} & { [K in `${S}-port`]: ReturnType<typeof Flags.integer> } & {
  [K in `${S}-password-file`]: ReturnType<typeof Flags.string>;
};

/** Every flag that changes how a task runs: shared by `run` and `task exec`. */
export const taskFlags = { ...engineFlags, ...limitFlags, ...timeoutFlags, ...serviceFlagSet };
