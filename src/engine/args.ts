import { formatSize } from '../config/size.js';
import { LABEL_MANAGED, LABEL_USERNS } from './labels.js';
import type {
  BuildIdMaps,
  BuildLimits,
  EngineInfo,
  GpuDevices,
  IdMaps,
  RunLimits,
  RunSpec,
  VolumeMount,
} from './types.js';

/**
 * Pure builders of engine CLI arguments. Nothing here runs anything; exec.ts does.
 * `info` carries the engine's name and the quirks they depend on.
 */
type Quirks = Pick<EngineInfo, 'name' | 'ociRuntimeOverride' | 'unenforcedLimits' | 'gpuDevices'>;

/** Container logs kept on disk by the engine (they are streamed out while the task runs). */
export const ENGINE_LOG_MAX = '64m';
/** conmon's own kill comes this long after the worker's deadline: a backstop if the worker dies. */
export const CONMON_GRACE_SECONDS = 30;

export function labelArgs(labels: Record<string, string>): string[] {
  return Object.entries({ ...labels, [LABEL_MANAGED]: 'true' }).flatMap(([key, value]) => [
    '--label',
    `${key}=${value}`,
  ]);
}

export function labelFilterArgs(labels: Record<string, string>): string[] {
  return Object.entries(labels).flatMap(([key, value]) => ['--filter', `label=${key}=${value}`]);
}

/** Hardening and resource limits of a container that runs a submission. */
export function limitArgs(info: Quirks, limits: RunLimits): string[] {
  const skip = new Set(info.unenforcedLimits ?? []);
  const args = [
    '--network=none',
    '--cap-drop=ALL',
    '--security-opt',
    'no-new-privileges',
    '--read-only',
    '--tmpfs',
    `/tmp:rw,nosuid,nodev,size=${formatSize(limits.tmpfsBytes)},mode=1777`,
    '--user',
    limits.user,
    '--ulimit',
    `nofile=${limits.nofile}:${limits.nofile}`,
    '--ulimit',
    `nproc=${limits.nproc}:${limits.nproc}`,
    // No core dumps: a host that pipes them to a helper would write them to its own disk.
    '--ulimit',
    'core=0:0',
    '--shm-size',
    formatSize(limits.shmBytes),
    '--init',
  ];
  // podman would add unsized tmpfs on /run and /var/tmp to a read-only root; /tmp is enough.
  if (info.name === 'podman') args.push('--read-only-tmpfs=false');
  // podman copies the CLI's own http_proxy and friends (credentials included) into a
  // container by default; docker only from its config file, which the worker never writes.
  if (info.name === 'podman') args.push('--http-proxy=false');
  if (!skip.has('pids')) args.push('--pids-limit', String(limits.pidsLimit));
  if (!skip.has('memory')) {
    const memory = formatSize(limits.memoryBytes);
    args.push('--memory', memory, '--memory-swap', memory);
  }
  if (!skip.has('cpus')) args.push('--cpus', String(limits.cpus));
  return args;
}

/**
 * `owned`: the container has ids of its own (idMapArgs), and podman's U option gives each
 * volume's files to them at the start, so what the worker staged, or an earlier step of
 * the task wrote, is the container's own user's to read and write.
 */
export function mountArgs(mounts: readonly VolumeMount[], owned = false): string[] {
  return mounts.flatMap((m) => {
    const options = [
      ...(m.readOnly || m.shared ? ['ro'] : []),
      ...(owned && !m.shared ? ['U'] : []),
    ];
    return ['-v', `${m.volume}:${m.target}${options.length ? `:${options.join(',')}` : ''}`];
  });
}

/**
 * A user namespace of the container's own: its ids 0..count-1 are host ids no other
 * container and no host user has, so its processes count against no one else's
 * RLIMIT_NPROC, and no file or process of another task is its. The label lets a worker
 * see that a dead worker's container still has the range (userns-pool.ts).
 */
export function idMapArgs(maps: IdMaps | undefined): string[] {
  if (!maps) return [];
  return [
    '--uidmap',
    `0:${maps.uid.start}:${maps.uid.count}`,
    '--gidmap',
    `0:${maps.gid.start}:${maps.gid.count}`,
    '--label',
    `${LABEL_USERNS}=${maps.uid.start}`,
  ];
}

/**
 * GPUs by UUID: CDI device names (podman, docker with CDI), else docker's --gpus, whose
 * value is CSV, so a list of devices is quoted as one field.
 */
export function gpuArgs(info: Quirks, gpus: GpuDevices | undefined): string[] {
  if (!gpus || gpus.uuids.length === 0) return [];
  if (info.name === 'docker' && info.gpuDevices !== 'cdi') {
    return ['--gpus', `"device=${gpus.uuids.join(',')}"`];
  }
  return gpus.uuids.flatMap((uuid) => ['--device', `${gpus.kind}=${uuid}`]);
}

export function runtimeArgs(info: Quirks): string[] {
  return info.ociRuntimeOverride ? ['--runtime', info.ociRuntimeOverride] : [];
}

/** `create` of a task container: hardened, limited, labelled, never started by this call. */
export function createArgs(
  info: Quirks,
  name: string,
  spec: RunSpec,
  /** A parent cgroup of the worker's, whose counters outlive the container (run-cgroup.ts). */
  cgroupParent?: string,
): string[] {
  const args = ['create', '--name', name, ...runtimeArgs(info), ...limitArgs(info, spec.limits)];
  if (cgroupParent) args.push(...cgroupParentArgs(info, cgroupParent));
  args.push('--log-opt', `max-size=${ENGINE_LOG_MAX}`);
  if (info.name === 'podman') {
    args.push('--timeout', String(Math.ceil(spec.timeoutMs / 1000) + CONMON_GRACE_SECONDS));
    // An image's VOLUME would otherwise be a host volume without our labels, outliving the
    // task; a tmpfs is charged to the container's memory and goes with it.
    args.push('--image-volume=tmpfs');
  }
  args.push(...labelArgs(spec.labels), ...mountArgs(spec.mounts, spec.idMaps !== undefined));
  args.push(...gpuArgs(info, spec.gpus), ...idMapArgs(spec.idMaps));
  args.push(...(spec.extraArgs ?? []));
  return [...args, spec.image, ...spec.command];
}

/** Under the worker's parent cgroup; podman's conmon stays out of it, so it holds the container only. */
export function cgroupParentArgs(info: Quirks, parent: string): string[] {
  return info.name === 'podman'
    ? ['--cgroups=no-conmon', '--cgroup-parent', parent]
    : ['--cgroup-parent', parent];
}

/** The same as createArgs: kept as the name readers look for; containers are never `run` directly. */
export const runArgs = createArgs;

export interface BuildArgsInput {
  tag: string;
  contextDir: string;
  /** Absolute path of the Containerfile/Dockerfile the build takes (every engine gets it as --file). */
  containerfile: string;
  labels: Record<string, string>;
  /** How an untrusted build is confined; undefined for a trusted one (the workflow). */
  isolation?: BuildIsolation;
}

export interface BuildIsolation {
  /** A build argument naming this build: its working containers carry it (see build-leftovers.ts). */
  mark: string;
  /** Host ids the build's root maps to (rootful podman); undefined: the engine's own namespace. */
  idMaps?: BuildIdMaps;
  /** A cgroup made by the worker that carries the limits; runc puts each RUN under it. */
  cgroupParent?: string;
  /** Limits passed to the engine, where no cgroup of the worker carries them. */
  limits?: Pick<BuildLimits, 'memoryBytes' | 'cpus'>;
}

/** Name of the build argument that marks a build's working containers. */
export const BUILD_MARK_ARG = 'COMPUTE_WORKER_BUILD';

/**
 * buildah (and docker's classic builder) warn at the end of every build that the mark was
 * not consumed: no Containerfile declares it, and declaring it would mean editing the
 * untrusted Containerfile (its parser directives, line numbers and continuations). The
 * mark must stay, as it is how a build's working containers and processes are found, so
 * the warning about it alone is not shown.
 */
export function isBuildMarkWarning(line: string): boolean {
  return (
    line === `[Warning] one or more build args were not consumed: [${BUILD_MARK_ARG}]` ||
    line === `[Warning] One or more build-args [${BUILD_MARK_ARG}] were not consumed`
  );
}

/**
 * Capabilities a RUN step keeps (of podman's default set): package managers and
 * adduser/chown need CHOWN (give files to users), DAC_OVERRIDE and FOWNER (root writing
 * and chmod-ing files it does not own), FSETID (keep setuid/setgid bits, e.g. dpkg
 * unpacking su), KILL (stop a process started as another user during an install),
 * SETUID/SETGID (su, adduser, apt dropping to _apt). Dropped: NET_BIND_SERVICE (no
 * network), SETFCAP and SETPCAP (file and process capabilities), SYS_CHROOT, MKNOD.
 */
export const BUILD_CAPABILITIES = [
  'CHOWN',
  'DAC_OVERRIDE',
  'FOWNER',
  'FSETID',
  'KILL',
  'SETGID',
  'SETUID',
] as const;

export function buildArgs(info: Quirks, input: BuildArgsInput): string[] {
  const common = ['--tag', input.tag, '--force-rm', ...labelArgs(input.labels)];
  const confine = input.isolation ? buildConfineArgs(info, input.isolation) : [];
  if (info.name === 'podman') {
    // Named explicitly: a remote podman without --file builds the Containerfile of its
    // service's working folder, not the context's.
    return [
      'build',
      '--network=none',
      '--pull=never',
      '--http-proxy=false',
      ...runtimeArgs(info),
      ...common,
      ...confine,
      '--file',
      input.containerfile,
      input.contextDir,
    ];
  }
  return [
    'build',
    '--network',
    'none',
    ...common,
    ...confine,
    '--file',
    input.containerfile,
    input.contextDir,
  ];
}

function buildConfineArgs(info: Quirks, isolation: BuildIsolation): string[] {
  const args = ['--build-arg', `${BUILD_MARK_ARG}=${isolation.mark}`];
  const limits = isolation.limits;
  if (limits) {
    const memory = formatSize(limits.memoryBytes);
    const quota = Math.max(1000, Math.round(limits.cpus * BUILD_CPU_PERIOD_US));
    args.push('--memory', memory, '--memory-swap', memory);
    args.push('--cpu-period', String(BUILD_CPU_PERIOD_US), '--cpu-quota', String(quota));
  }
  if (isolation.cgroupParent) args.push('--cgroup-parent', isolation.cgroupParent);
  // docker's build has neither capabilities nor id maps (only the daemon's userns-remap).
  if (info.name !== 'podman') return args;
  // No layer cache shared with strangers' builds (the image is cached by its context's
  // digest anyway); and buildah 1.28 cannot mount /etc/hostname into a cached layer
  // under an id map ("permission denied").
  args.push('--layers=false');
  args.push('--cap-drop', 'ALL', '--cap-add', BUILD_CAPABILITIES.join(','));
  if (isolation.idMaps) {
    const { uid, gid } = isolation.idMaps;
    args.push('--userns-uid-map', `0:${uid.start}:${uid.count}`);
    args.push('--userns-gid-map', `0:${gid.start}:${gid.count}`);
  }
  return args;
}

const BUILD_CPU_PERIOD_US = 100_000;

export function imageExistsArgs(info: Quirks, image: string): string[] {
  return info.name === 'podman'
    ? ['image', 'exists', image]
    : ['image', 'inspect', '--format', '{{.Id}}', image];
}

/**
 * One line per image of these names that exists, its names as a JSON list; a missing one
 * fails the call but leaves the others' lines (podman and docker alike).
 */
export function imageNamesOfArgs(images: readonly string[]): string[] {
  return ['image', 'inspect', '--format', '{{json .RepoTags}}', ...images];
}

/** The image's declared volumes as JSON (null when none); podman and docker alike. */
export function imageVolumesArgs(image: string): string[] {
  return ['image', 'inspect', '--format', '{{json .Config.Volumes}}', image];
}

export function removeImageArgs(image: string): string[] {
  return ['rmi', '--force', image];
}

export function volumeCreateArgs(name: string, labels: Record<string, string>): string[] {
  return ['volume', 'create', ...labelArgs(labels), name];
}

/** One line of JSON labels per volume, in the order given. */
export function volumeLabelsArgs(names: readonly string[]): string[] {
  return ['volume', 'inspect', '--format', '{{json .Labels}}', ...names];
}

/** podman only: the volume as a tar, written to `file` (a FIFO the worker reads). */
export function volumeExportArgs(volume: string, file: string): string[] {
  return ['volume', 'export', '--output', file, volume];
}

export function volumeImportArgs(volume: string): string[] {
  return ['volume', 'import', volume, '-'];
}

/** Where the helper container mounts the volume it copies into or out of. */
export const HELPER_MOUNT = '/mnt';

/** A container that is created, never started, only to reach a volume with `cp`. */
export function helperCreateArgs(
  image: string,
  name: string,
  volume: string,
  labels: Record<string, string>,
): string[] {
  return [
    'create',
    '--name',
    name,
    '--network',
    'none',
    ...labelArgs(labels),
    '-v',
    `${volume}:${HELPER_MOUNT}`,
    image,
    '/nothing',
  ];
}

export function copyInArgs(container: string, engine: 'podman' | 'docker' = 'docker'): string[] {
  // Keep the uid/gid written in the tar headers, as podman's volume import does: docker's
  // --archive keeps them; podman's --archive (on by default) gives them to the container's user.
  const keepOwners = engine === 'podman' ? '--archive=false' : '--archive';
  return ['cp', keepOwners, '-', `${container}:${HELPER_MOUNT}`];
}

export function copyOutArgs(container: string): string[] {
  return ['cp', `${container}:${HELPER_MOUNT}/.`, '-'];
}

export function containerListArgs(labels: Record<string, string>): string[] {
  return ['ps', '--all', '--quiet', '--no-trunc', ...labelFilterArgs(labels)];
}

export function volumeListArgs(labels: Record<string, string>): string[] {
  return ['volume', 'ls', '--quiet', ...labelFilterArgs(labels)];
}

/** --volumes: the anonymous volumes of an image's VOLUME go too (docker has no tmpfs for them). */
export function removeContainersArgs(ids: readonly string[]): string[] {
  return ['rm', '--force', '--volumes', ...ids];
}

/**
 * podman only: force-removes every container with this one label in the same call that
 * lists them, printing their ids (one filter: podman 4.3 ORs several).
 */
export function removeContainersByLabelArgs(label: Record<string, string>): string[] {
  return ['rm', '--force', '--volumes', ...labelFilterArgs(label)];
}

/**
 * podman only: removes the unused volumes with this one label in the same call that lists
 * them, printing their names.
 */
export function pruneVolumesArgs(label: Record<string, string>): string[] {
  return ['volume', 'prune', '--force', ...labelFilterArgs(label)];
}

export function removeVolumesArgs(names: readonly string[]): string[] {
  return ['volume', 'rm', '--force', ...names];
}

/**
 * Starts a created container and streams its output until it exits, exiting with its code.
 * The worker stops this client with SIGKILL (nothing to proxy), then kills the container by name.
 */
export function startAttachArgs(name: string): string[] {
  return ['start', '--attach', name];
}

/** Kills a container by name: its attached `start` client then ends by itself. */
export function killArgs(name: string): string[] {
  return ['kill', name];
}

export function waitArgs(name: string): string[] {
  return ['wait', name];
}

export function stateInspectArgs(name: string): string[] {
  return ['inspect', '--type', 'container', '--format', '{{json .State}}', name];
}

/**
 * Global flags, before the command, that send a call to the engine at `host` (--engine-host)
 * instead of the local one: podman's remote client, docker's -H.
 */
export function engineHostArgs(engine: 'podman' | 'docker', host: string | undefined): string[] {
  if (!host) return [];
  return engine === 'podman' ? ['--remote', '--url', host] : ['-H', host];
}

/** A cheap call the engine must answer: docker's client asks its daemon, remote podman its service. */
export function pingArgs(engine: 'podman' | 'docker'): string[] {
  return engine === 'docker'
    ? ['version', '--format', '{{.Server.Version}}']
    : ['version', '--format', '{{.Version}}'];
}

export function volumeMountpointArgs(volume: string): string[] {
  return ['volume', 'inspect', '--format', '{{.Mountpoint}}', volume];
}

/** Allocated bytes under a path, counted inside rootless podman's user namespace. */
export function duArgs(path: string): string[] {
  return ['unshare', 'du', '--summarize', '--one-file-system', '--block-size=1', '--', path];
}

/** Every container including buildah's working containers, which `ps --all` alone hides. */
export function externalContainerListArgs(): string[] {
  return ['ps', '--all', '--external', '--quiet', '--no-trunc'];
}

/** Where podman keeps its storage: `<graph root>\t<driver>`. */
export function storageInfoArgs(): string[] {
  return ['info', '--format', '{{.Store.GraphRoot}}\t{{.Store.GraphDriverName}}'];
}

/** Ids of the images that carry this label (one label: podman 4.3 ORs several). */
export function imageListArgs(label: Record<string, string>): string[] {
  return ['images', '--quiet', '--no-trunc', ...labelFilterArgs(label)];
}

export function imageInspectArgs(ids: readonly string[]): string[] {
  return ['image', 'inspect', ...ids];
}

/** Without --force: the engine refuses an image that any container (of any worker) uses. */
export function removeUnusedImageArgs(name: string): string[] {
  return ['rmi', name];
}

/** Dangling images (the layers a failed build left) that carry this label, and only those. */
export function pruneImagesArgs(label: Record<string, string>): string[] {
  return ['image', 'prune', '--force', ...labelFilterArgs(label)];
}

/** An image's size in bytes (podman and docker alike). */
export function imageSizeArgs(image: string): string[] {
  return ['image', 'inspect', '--format', '{{.Size}}', image];
}

/**
 * Whether podman is rootless and where it keeps its storage:
 * `<true|false>\t<graph root>\t<run root>\t<driver>`.
 */
export function buildUserInfoArgs(): string[] {
  return [
    'info',
    '--format',
    '{{.Host.Security.Rootless}}\t{{.Store.GraphRoot}}\t{{.Store.RunRoot}}\t{{.Store.GraphDriverName}}',
  ];
}

/** A podman store of its own: its folders, its driver, and read-only stores of images it also sees. */
export interface StoreSpec {
  root: string;
  runRoot: string;
  driver: string;
  /** Additional image stores (graph roots), read-only to this store's users. */
  imageStores?: readonly string[];
}

/** podman's global flags that use the store `spec` instead of the user's default one. */
export function storeArgs(spec: StoreSpec): string[] {
  const args = ['--root', spec.root, '--runroot', spec.runRoot, '--storage-driver', spec.driver];
  for (const store of spec.imageStores ?? []) {
    args.push('--storage-opt', `${spec.driver}.imagestore=${store}`);
  }
  return args;
}

/** Takes every name off an image (by ID), which stays. */
export function untagAllArgs(id: string): string[] {
  return ['untag', id];
}

/** Removes a folder inside a rootless podman's user namespace, where its subordinate ids are root's. */
export function unshareRemoveArgs(path: string): string[] {
  return ['unshare', 'rm', '-rf', '--', path];
}

/**
 * Copies an image into another local store. containers/image skips every layer the
 * destination already has (by its uncompressed digest): only what a build added is copied.
 */
export function pushToStoreArgs(image: string, to: StoreSpec): string[] {
  return [
    'push',
    '--quiet',
    image,
    `containers-storage:[${to.driver}@${to.root}+${to.runRoot}]${image}`,
  ];
}

/** An image's ID, names and labels: `<id>\t<json names>\t<json labels>` (podman). */
export function imageOriginArgs(image: string): string[] {
  return [
    'image',
    'inspect',
    '--format',
    '{{.Id}}\t{{json .RepoTags}}\t{{json .Labels}}\t{{json .Config.Volumes}}',
    image,
  ];
}

/** An image's ID (podman and docker alike). */
export function imageIdArgs(image: string): string[] {
  return ['image', 'inspect', '--format', '{{.Id}}', image];
}

/** The image as a docker-archive on stdout: its name and ID travel with it. */
export function imageSaveArgs(image: string): string[] {
  return ['save', '--format', 'docker-archive', image];
}

/** Loads an archive from stdin (podman spools it to a file in $TMPDIR first). */
export function imageLoadArgs(): string[] {
  return ['load'];
}

/** The ids of every image in the store, one a line. */
export function allImageIdsArgs(): string[] {
  return ['images', '--all', '--quiet', '--no-trunc'];
}

/** `<id>\t<repository>` for each name of each image (one line per name). */
export function imageNamesArgs(): string[] {
  return ['images', '--no-trunc', '--format', '{{.ID}}\t{{.Repository}}'];
}

/** Each container's id and labels, one line each (`ID<TAB>{json}`). */
export function containerLabelLinesArgs(ids: readonly string[]): string[] {
  return ['inspect', '--type', 'container', '--format', '{{.Id}}\t{{json .Config.Labels}}', ...ids];
}

/** Each volume's name and labels, one line each (`NAME<TAB>{json}`). */
export function volumeLabelLinesArgs(names: readonly string[]): string[] {
  return ['volume', 'inspect', '--format', '{{.Name}}\t{{json .Labels}}', ...names];
}

/** The ids of the images no name points to any more: what an interrupted build or move leaves. */
export function danglingImagesArgs(): string[] {
  return ['images', '--quiet', '--no-trunc', '--filter', 'dangling=true'];
}
