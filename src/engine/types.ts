import type { Readable } from 'node:stream';

/**
 * What a volume holds, measured from the host: the engine's volumes have no quota on an
 * ordinary filesystem, so the worker walks them itself.
 */
export interface TreeUsage {
  /** Allocated bytes (st_blocks * 512): a sparse file counts what it really takes. */
  bytes: number;
  /** Files, folders and links seen. */
  entries: number;
  /** Folders the walk could not read (their content is not in `bytes`). */
  unreadable: number;
  /** The walk stopped at `maxEntries`: `bytes` is a lower bound. */
  truncated: boolean;
}

export interface WalkOptions {
  /** Stop after this many entries, so a tree of millions of empty files costs a bounded walk. */
  maxEntries: number;
  /** Stop as soon as this many bytes are counted: the answer is known. */
  stopAtBytes?: number;
  /**
   * Count a file by its length where that is more than it takes: a layer that is committed
   * writes a sparse file whole.
   */
  wholeFiles?: boolean;
  /**
   * Each entry counts at least this many bytes: an empty file takes an inode, and a tree of
   * millions of them fills a filesystem's inodes while its blocks stay few.
   */
  minEntryBytes?: number;
  /**
   * A folder to compare with: an entry that it holds at the same path, of the same type,
   * size, mode, owner and modification time, is not counted (its folders are still walked).
   * A vfs layer is a whole copy of its parent's root filesystem, and its commit keeps only
   * what differs so.
   */
  sameAs?: string;
}

export interface IdRange {
  start: number;
  count: number;
}

/** The host ids a container's or an untrusted build's root (0) and users (1..count-1) map to. */
export interface IdMaps {
  uid: IdRange;
  gid: IdRange;
}
export type BuildIdMaps = IdMaps;

/** What was found out about the container engine, once, at start-up. Every quirk is keyed on this. */
export interface EngineInfo {
  name: 'podman' | 'docker';
  /** The CLI binary that is run. */
  path: string;
  /** Server (engine) version, e.g. "4.3.1". */
  version: string;
  clientVersion: string;
  rootless: boolean;
  /** The OCI runtime containers run with: the --oci-runtime flag if given, else the engine's default. */
  ociRuntime: string;
  /** Runtime that --runtime passes through, when the operator chose one. */
  ociRuntimeOverride?: string;
  cgroupVersion: 1 | 2;
  /** The host mounts cgroup v1 plus a v2 "unified" tree (crun cannot run there). */
  cgroupHybrid: boolean;
  storageDriver: string;
  /**
   * Limits the engine cannot apply here and that are therefore left out of `run`
   * (rootless podman on cgroup v1); empty when every limit is enforced.
   */
  unenforcedLimits?: UnenforcedLimit[];
  /** The buildah version podman builds with (`podman info`: host.buildahVersion); undefined for docker. */
  buildahVersion?: string;
  /** How GPUs reach a container: CDI `--device KIND=UUID`, or docker's `--gpus` through the NVIDIA hook. */
  gpuDevices?: 'cdi' | 'nvidia-hook';
  /** Where the engine keeps images and volumes on the host (podman GraphRoot, docker DockerRootDir). */
  graphRoot?: string;
  /** podman's run root (`podman info`: store.runRoot), where its locks and mounts are. */
  runRoot?: string;
  /** Read-only stores the engine also sees (a build's own store sees the base store). */
  imageStores?: readonly string[];
  /** podman's cgroup manager, "cgroupfs" or "systemd" (a systemd one takes only slices as parents). */
  cgroupManager?: string;
  /**
   * The URL of a remote engine every call goes to (--engine-host, CONTAINER_HOST, DOCKER_HOST);
   * undefined for the local one. Its host's folders are not this host's: see remote.ts.
   */
  engineHost?: string;
}

export interface EngineOptions {
  /** podman or docker; undefined = podman if on PATH, else docker. */
  engine?: 'podman' | 'docker';
  /** A non-standard path of the CLI binary. */
  enginePath?: string;
  /** Passed as --runtime (runc, crun, runsc, ...). */
  ociRuntime?: string;
  /** Bound for one build (the seed's -docker-timeout). */
  buildTimeoutMs: number;
  /** Bound for any other engine call (inspect, volume import, ...). */
  callTimeoutMs: number;
  /**
   * Working folder of the engine CLI (default: the system temp folder). podman's conmon
   * writes an `oom` file into its working folder when a container runs out of memory, so
   * it must not be wherever the worker happened to be started; a container's start runs
   * in a folder of its own under this one, where the worker reads that file.
   */
  workDir?: string;
  /**
   * How the problem's workflow Containerfile is checked: `trusted` (default) refuses what
   * reaches the host or its network, `strict` applies the submissions' allowlist.
   * Submissions are always checked strictly.
   */
  workflowBuildPolicy?: 'trusted' | 'strict';
  /** Limits of an untrusted build's RUN steps (--build-memory, --build-cpus, --build-pids-limit). */
  buildLimits?: BuildLimits;
  /**
   * Host uid/gid range START:COUNT the root of an untrusted build maps to (rootful podman);
   * undefined: the `containers` entry of /etc/subuid and /etc/subgid, else DEFAULT_BUILD_USERNS.
   */
  buildUserns?: string;
  /**
   * --disk-limit: what an untrusted build may write into its layers (measured while it runs,
   * podman only) and the size its image may have; undefined: not bounded.
   */
  buildDiskLimitBytes?: number;
  /** --max-context-size: most bytes a build context holds unpacked; undefined: the tar default (10 GiB). */
  maxContextBytes?: number;
  /**
   * Where `podman info`'s answer is kept between processes (see info-cache.ts); undefined:
   * podman is asked every time.
   */
  infoCacheFile?: string;
  /**
   * --engine-host: the URL of the engine to drive (unix://, ssh://, tcp://); undefined:
   * CONTAINER_HOST (podman) or DOCKER_HOST (docker) when set, else the local engine.
   */
  engineHost?: string;
  /**
   * --build-user: the unprivileged host user whose rootless podman builds untrusted contexts
   * (rootful podman, worker run as root); `none` for none; undefined or `auto`: the user
   * DEFAULT_BUILD_USER when it exists (see build-user.ts).
   */
  buildUser?: string;
  /**
   * The worker's id: every untrusted build's id starts with it, so that the worker, started
   * again after a crash (or the next command, after a killed task exec), stops and removes
   * the builds it left (Engine.removeOrphanBuilds).
   */
  owner?: string;
}

/** What a worker's earlier run left of its untrusted builds, now removed. */
export interface OrphanBuilds {
  /** The ids of the builds whose processes were still running. */
  builds: string[];
  /** Their working containers, in the host's and the build user's storage. */
  containers: string[];
  /** Their temp folders under /var/tmp. */
  folders: string[];
}

/** Resource limits of an image build's RUN steps. */
export interface BuildLimits {
  memoryBytes: number;
  cpus: number;
  pidsLimit: number;
}

/** Resource limits of one container. Every one is finite: never "unlimited" for a submission. */
export interface RunLimits {
  memoryBytes: number;
  cpus: number;
  pidsLimit: number;
  tmpfsBytes: number;
  shmBytes: number;
  /** uid:gid the container runs as. */
  user: string;
  nofile: number;
  nproc: number;
}

export interface VolumeMount {
  volume: string;
  /** Absolute path inside the container. */
  target: string;
  readOnly?: boolean;
  /**
   * Mounted by the containers of several tasks at once (a cached data set): its files keep
   * the owner they were staged with, never given to one container's own ids (podman's U),
   * which would take them from the others. Read-only, and readable by anyone.
   */
  shared?: boolean;
}

export interface RunSpec {
  image: string;
  /** Arguments after the image name: the container's command, passed to its ENTRYPOINT. */
  command: string[];
  mounts: VolumeMount[];
  /** Labels on the container (cleanup finds containers by them). */
  labels: Record<string, string>;
  limits: RunLimits;
  /** The container is killed and removed at this deadline. */
  timeoutMs: number;
  /** Keep at most this many of the last log lines / bytes in the result. */
  logTailLines: number;
  logTailBytes: number;
  /** Called with each log line of the container (stdout and stderr) as it comes, each line once. */
  onLogLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Aborting kills and removes the container. */
  signal?: AbortSignal;
  /** GPUs given to the container, by UUID; none when absent. */
  gpus?: GpuDevices;
  /**
   * The host ids of the container's own user namespace (rootful podman, userns-pool.ts);
   * absent: the engine's namespace, shared with every other container.
   */
  idMaps?: IdMaps;
  /** Extra engine flags decided by the caller, e.g. GPU devices. Must come from a pure builder. */
  extraArgs?: string[];
  /**
   * The stopped container is left for the caller to remove with others in one call (a task
   * removes all of its containers by their run label when it ends); default: removed here.
   */
  removeLater?: boolean;
}

/** A container created and its volumes checked, not started yet (Engine.prepareRuns). */
export interface PreparedRun {
  /** Starts it and waits for its end, as Engine.run; `live` replaces the spec's signal and log listener. */
  start(live?: Pick<RunSpec, 'signal' | 'onLogLine'>): Promise<RunResult>;
  /** What a run never started leaves goes: its cgroup, and its container unless removeLater. */
  discard(): Promise<void>;
}

export interface RunResult {
  exitCode: number;
  /**
   * The engine recorded an OOM kill (its OOMKilled flag, conmon's `oom` file), or, where it
   * keeps no record, the container died by SIGKILL under a memory limit without the worker
   * killing it.
   */
  oomKilled: boolean;
  /**
   * It died by SIGKILL or SIGTERM that neither the worker nor the container's OOM killer
   * sent: an operator's `kill` or `stop`, the host running out of memory, a host shutdown.
   */
  killedFromOutside: boolean;
  /** The worker killed it at its deadline. */
  timedOut: boolean;
  /** The run was cancelled through its signal. */
  cancelled: boolean;
  durationMs: number;
  /** Last lines of the container's output, capped by logTailLines / logTailBytes. */
  logTail: string;
  /** What the container used, from its cgroup; absent where the worker cannot read it. */
  usage?: ContainerUsage;
}

/** A container's CPU time and memory peak; a figure that could not be measured is left out. */
export interface ContainerUsage {
  cpuSeconds?: number;
  peakMemoryBytes?: number;
}

export interface BuildRequest {
  /**
   * "workflow" or "submission": part of the image name localhost/compute-worker/<role>:<digest>.
   * It also picks the Containerfile policy: "workflow" gets EngineOptions.workflowBuildPolicy,
   * any other role (a submission, the probe) the strict allowlist.
   */
  role: string;
  /** A .tar.gz build context with a Dockerfile or Containerfile at its root. */
  context: Readable;
  labels: Record<string, string>;
  signal?: AbortSignal;
  onOutputLine?: (line: string) => void;
  /** Names an untrusted build's cgroup, mark and temp folder (hex; default random). */
  buildId?: string;
  /**
   * Asks whether the image exists together with the other builds of the same lookup
   * (Engine.imageLookup), in one engine call; absent: asked alone.
   */
  lookup?: ImageLookup;
  /**
   * Called with the image's name once the context's digest is known, before the image is
   * looked up or built; the build waits for it (the image cache holds the name here, so
   * that it is not removed between the lookup and the task's use of it).
   */
  onImage?: (image: string) => Promise<void> | void;
}

export interface BuildResult {
  image: string;
  /** sha256 hex of the context bytes. */
  digest: string;
  /** True when the image already existed and nothing was built. */
  cached: boolean;
  durationMs: number;
  /** True when another call was building the same image at the same time, and this one waited for it. */
  joined?: boolean;
}

/**
 * Existence checks of images asked together (a task's workflow and submission): once
 * `expected` callers have asked or passed, one engine call answers all of them. A caller
 * that will not ask (its build failed first, or joined another build) passes, or the
 * others wait for it.
 */
export interface ImageLookup {
  exists(image: string, call: { timeoutMs: number }): Promise<boolean>;
  pass(): void;
}

/** An image as the cache sees it. */
export interface ImageFacts {
  /** Full id, without the sha256: prefix. */
  id: string;
  /** Its names (repository:tag); none for a dangling image. */
  names: string[];
  /** Size as the engine reports it (layers shared with other images counted in each). */
  sizeBytes: number;
  createdMs: number;
  labels: Record<string, string>;
}

/** The worker's one door to a container engine. Nothing above this layer runs the engine CLI. */
export interface Engine {
  readonly info: EngineInfo;
  /** Builds (or finds cached) localhost/compute-worker/<role>:<sha256 of the context>. */
  buildImage(request: BuildRequest): Promise<BuildResult>;
  /** One existence check for the images of `expected` builds (BuildRequest.lookup). */
  imageLookup(expected: number): ImageLookup;
  /** How many containers (running or not) carry this one label with this value. */
  countContainers(label: string, value: string): Promise<number>;
  /**
   * Creates a named volume with these labels (plus LABEL_MANAGED); returns its name. The
   * name is the engine layer's own unless one is given (made by the worker, never from
   * task data).
   */
  createVolume(labels: Record<string, string>, name?: string): Promise<string>;
  /** The volumes that carry this one label, with all their labels. */
  listVolumes(label: Record<string, string>): Promise<LabelledVolume[]>;
  /** Force-removes these volumes by name; one already gone is no error. */
  removeVolumes(names: readonly string[]): Promise<void>;
  /** Puts the files of a tar stream into the volume's root. */
  importVolume(volume: string, tar: Readable, signal?: AbortSignal): Promise<void>;
  /** The volume's root as a tar stream; an engine failure is an 'error' event on the stream. */
  exportVolume(volume: string, signal?: AbortSignal): Readable;
  /** create, start, wait with a deadline that kills, inspect, remove. */
  run(spec: RunSpec): Promise<RunResult>;
  /**
   * Creates the containers of several runs and checks all their volumes in one call; each
   * is started later. Every one is either started or discarded.
   */
  prepareRuns(specs: readonly RunSpec[]): Promise<PreparedRun[]>;
  /** Force-removes the containers, then the volumes, that carry all of these labels. */
  removeByLabels(
    labels: Record<string, string>,
  ): Promise<{ containers: string[]; volumes: string[] }>;
  /**
   * Stops and removes the untrusted builds a dead run of the worker `owner` (its
   * EngineOptions.owner) left: their processes, working containers and temp folders.
   */
  removeOrphanBuilds(owner: string): Promise<OrphanBuilds>;
  /** Every container and volume of any compute-worker on this engine, with its worker id. */
  listManaged(): Promise<ManagedObjects>;
  /** What the base store of untrusted builds holds; undefined where builds have none. */
  baseStore(): Promise<BaseStoreSummary | undefined>;
  /** The host folder of a volume's files, or undefined when the engine gives none. */
  volumeMountpoint(volume: string): Promise<string | undefined>;
  /** Allocated bytes under a volume's host folder; throws when it cannot be read. */
  measureVolume(mountpoint: string, options: WalkOptions): Promise<TreeUsage>;
  /** Asks the engine a cheap question; throws when it does not answer in time. */
  ping(): Promise<void>;
  /** The images that carry this one label. */
  listImages(label: Record<string, string>): Promise<ImageFacts[]>;
  /** Removes one image name unless a container uses the image. */
  removeImage(name: string): Promise<'removed' | 'kept' | 'missing'>;
  /** Removes the dangling images that carry this one label. */
  pruneImages(label: Record<string, string>): Promise<void>;
}

/** Limits that the engine cannot enforce on this host (see EngineInfo.unenforcedLimits). */
export type UnenforcedLimit = 'memory' | 'cpus' | 'pids';

/** GPUs for one container: their UUIDs, and the CDI kind that names them (nvidia.com/gpu). */
export interface GpuDevices {
  kind: string;
  uuids: readonly string[];
}

export interface LabelledVolume {
  name: string;
  labels: Record<string, string>;
}

/** A container (by id) or volume (by name) of some compute-worker, and that worker's id. */
export interface ManagedObject {
  name: string;
  /** Its `compute-worker.worker` label; none on an image's labels inherited alone. */
  worker?: string;
}

export interface ManagedObjects {
  containers: ManagedObject[];
  volumes: ManagedObject[];
}

/** The base store of untrusted builds (see src/build/base-prune.ts). */
export interface BaseStoreSummary {
  root: string;
  /** Whether a build ever made it. */
  exists: boolean;
  images: number;
  /** Copies of images the host no longer has: the next untrusted build removes them after the grace. */
  missing: number;
  /** On disk, the blocks its files take. */
  bytes: number;
}
