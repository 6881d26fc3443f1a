import { access, constants, readFile } from 'node:fs/promises';
import { basename, delimiter, join } from 'node:path';
import { z } from 'zod';
import { WorkerError } from '../errors.js';
import { type EngineCli, execEngine } from './exec.js';
import { infoCacheKey, readInfoCache, writeInfoCache } from './info-cache.js';
import { resolveEngineHost } from './remote.js';
import type { EngineInfo, EngineOptions, UnenforcedLimit } from './types.js';

const podmanInfoSchema = z.object({
  host: z.object({
    cgroupVersion: z.string(),
    cgroupManager: z.string().optional(),
    cgroupControllers: z.array(z.string()).nullish(),
    ociRuntime: z.object({ name: z.string() }).optional(),
    security: z.object({ rootless: z.boolean() }),
    buildahVersion: z.string().optional(),
    serviceIsRemote: z.boolean().optional(),
  }),
  store: z.object({
    graphDriverName: z.string(),
    graphRoot: z.string().optional(),
    runRoot: z.string().optional(),
  }),
  version: z.object({ Version: z.string() }),
});

const dockerInfoSchema = z.object({
  ServerVersion: z.string(),
  CgroupVersion: z.string().optional(),
  DefaultRuntime: z.string().optional(),
  Driver: z.string(),
  SecurityOptions: z.array(z.string()).nullish(),
  CDISpecDirs: z.array(z.string()).nullish(),
  DockerRootDir: z.string().optional(),
});

/** Finds the engine CLI and describes it: every quirk of the engine layer is keyed on this. */
export async function detectEngine(
  options: Pick<
    EngineOptions,
    | 'engine'
    | 'enginePath'
    | 'ociRuntime'
    | 'callTimeoutMs'
    | 'engineHost'
    | 'buildUserns'
    | 'infoCacheFile'
  >,
): Promise<EngineInfo> {
  const found = await findCli(options);
  const engineHost = resolveEngineHost(found.name, options.engineHost);
  const cli: EngineCli = engineHost ? { ...found, engineHost } : found;
  if (engineHost && cli.name === 'podman' && options.ociRuntime) {
    throw new WorkerError(
      'CONFIG_INVALID',
      '--oci-runtime cannot be given to a remote podman: its client has no --runtime, the service runs containers with its own',
      {
        hint: 'set the runtime where the service runs (`podman --runtime runc system service`, or [engine] runtime in its containers.conf) and drop --oci-runtime',
      },
    );
  }
  if (engineHost && options.buildUserns === 'auto') {
    throw new WorkerError(
      'CONFIG_INVALID',
      "--build-userns auto reads this host's /etc/subuid and /etc/subgid, not those of the remote engine's host",
      { hint: "give the range of the engine's host as --build-userns START:COUNT" },
    );
  }
  // A remote engine's cgroups are not this host's: what its containers do tells (doctor's probe).
  const hybrid = engineHost ? false : await hostCgroupHybrid();
  const info =
    cli.name === 'podman' ? await podmanInfoCached(cli, options) : await dockerInfo(cli, options);
  const { cgroupControllers, serviceIsRemote, ...described } = info;
  if (serviceIsRemote && !engineHost) {
    throw new WorkerError(
      'CONFIG_INVALID',
      `${cli.path} is a remote client here (CONTAINER_CONNECTION or containers.conf names a service), but no --engine-host was given`,
      {
        hint: 'pass the service as --engine-host URL (COMPUTE_WORKER_ENGINE_HOST), so that the worker knows the engine is not on this host',
      },
    );
  }
  const result: EngineInfo = {
    ...described,
    cgroupHybrid: hybrid,
    ociRuntime: options.ociRuntime ?? info.ociRuntime,
    ...(options.ociRuntime ? { ociRuntimeOverride: options.ociRuntime } : {}),
  };
  if (engineHost) {
    // Its storage folder is on its own host: nothing here may read it.
    delete result.graphRoot;
    result.engineHost = engineHost;
  }
  result.unenforcedLimits = unenforcedLimits(result, cgroupControllers);
  return result;
}

/**
 * A rootless engine can only apply the cgroup limits whose controllers are delegated to
 * its user: none on cgroup v1; on v2 those podman lists in `info` (systemd delegation).
 */
export function unenforcedLimits(
  info: Pick<EngineInfo, 'name' | 'rootless' | 'cgroupVersion'>,
  controllers?: readonly string[],
): UnenforcedLimit[] {
  if (!info.rootless) return [];
  if (info.cgroupVersion === 1) return ['memory', 'cpus', 'pids'];
  // docker does not list delegated controllers: ask for the limits and let it refuse.
  if (!controllers) return [];
  const needed: [UnenforcedLimit, string][] = [
    ['memory', 'memory'],
    ['cpus', 'cpu'],
    ['pids', 'pids'],
  ];
  return needed
    .filter(([, controller]) => !controllers.includes(controller))
    .map(([limit]) => limit);
}

async function findCli(options: Pick<EngineOptions, 'engine' | 'enginePath'>): Promise<EngineCli> {
  if (options.enginePath) {
    const name =
      options.engine ?? (basename(options.enginePath).includes('docker') ? 'docker' : 'podman');
    if (!(await isExecutable(options.enginePath)))
      throw notFound(`${options.enginePath} is not an executable file`);
    return { name, path: options.enginePath };
  }
  for (const name of options.engine ? [options.engine] : (['podman', 'docker'] as const)) {
    const path = await onPath(name);
    if (path) return { name, path };
  }
  throw notFound(
    options.engine ? `${options.engine} is not on PATH` : 'neither podman nor docker is on PATH',
  );
}

function notFound(why: string): WorkerError {
  return new WorkerError('ENGINE_NOT_FOUND', `No container engine: ${why}`, {
    hint: 'install podman and runc (apt-get install podman runc) or docker, or pass --engine-path (COMPUTE_WORKER_ENGINE_PATH)',
  });
}

async function onPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && (await isExecutable(join(dir, name)))) return join(dir, name);
  }
  return undefined;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

type BaseInfo = Omit<EngineInfo, 'cgroupHybrid' | 'ociRuntimeOverride'> & {
  /** cgroup controllers the engine can use; undefined when the engine does not say. */
  cgroupControllers?: string[];
  /** podman is a remote client (of a connection configured outside the worker). */
  serviceIsRemote?: boolean;
};

async function podmanInfoCached(
  cli: EngineCli,
  options: Pick<EngineOptions, 'callTimeoutMs' | 'infoCacheFile'>,
): Promise<BaseInfo> {
  const file = options.infoCacheFile;
  // A remote service's configuration is not on this host: nothing here tells a change.
  if (!file || cli.engineHost) return podmanInfo(cli, options);
  const key = await infoCacheKey(cli.path);
  const cached = (await readInfoCache(file, key)) as BaseInfo | undefined;
  if (cached?.name === 'podman' && cached.path === cli.path) return cached;
  const info = await podmanInfo(cli, options);
  await writeInfoCache(file, key, info);
  return info;
}

async function podmanInfo(
  cli: EngineCli,
  options: Pick<EngineOptions, 'callTimeoutMs'>,
): Promise<BaseInfo> {
  const raw = await execEngine(cli, ['info', '--format', 'json'], {
    timeoutMs: options.callTimeoutMs,
  });
  const info = parseJson(podmanInfoSchema, raw, cli);
  return {
    name: 'podman',
    path: cli.path,
    version: info.version.Version,
    clientVersion: info.version.Version,
    rootless: info.host.security.rootless,
    ociRuntime: info.host.ociRuntime?.name ?? 'unknown',
    cgroupVersion: info.host.cgroupVersion === 'v2' ? 2 : 1,
    storageDriver: info.store.graphDriverName,
    cgroupControllers: info.host.cgroupControllers ?? [],
    ...(info.host.buildahVersion ? { buildahVersion: info.host.buildahVersion } : {}),
    gpuDevices: 'cdi',
    ...(info.store.graphRoot ? { graphRoot: info.store.graphRoot } : {}),
    ...(info.store.runRoot ? { runRoot: info.store.runRoot } : {}),
    ...(info.host.cgroupManager ? { cgroupManager: info.host.cgroupManager } : {}),
    serviceIsRemote: info.host.serviceIsRemote === true,
  };
}

async function dockerInfo(
  cli: EngineCli,
  options: Pick<EngineOptions, 'callTimeoutMs'>,
): Promise<BaseInfo> {
  const call = { timeoutMs: options.callTimeoutMs };
  const [rawInfo, rawClient] = await Promise.all([
    execEngine(cli, ['info', '--format', '{{json .}}'], call),
    execEngine(cli, ['version', '--format', '{{json .Client.Version}}'], call),
  ]);
  const info = parseJson(dockerInfoSchema, rawInfo, cli);
  return {
    name: 'docker',
    path: cli.path,
    version: info.ServerVersion,
    clientVersion: parseJson(z.string(), rawClient, cli),
    rootless: (info.SecurityOptions ?? []).some((option) => option.includes('name=rootless')),
    ociRuntime: info.DefaultRuntime ?? 'runc',
    cgroupVersion: info.CgroupVersion === '2' ? 2 : 1,
    storageDriver: info.Driver,
    // A daemon with CDI enabled (docker 25+) lists its spec folders; older ones need the
    // NVIDIA hook behind --gpus.
    gpuDevices: (info.CDISpecDirs ?? []).length > 0 ? 'cdi' : 'nvidia-hook',
    ...(info.DockerRootDir ? { graphRoot: info.DockerRootDir } : {}),
  };
}

function parseJson<T>(schema: z.ZodType<T>, raw: string, cli: EngineCli): T {
  try {
    return schema.parse(JSON.parse(raw));
  } catch (error) {
    throw new WorkerError(
      'ENGINE_FAILED',
      `${cli.path} info gave an answer this worker does not understand`,
      {
        retryable: false,
        detail: raw.slice(0, 2000),
        cause: error,
        hint: 'use podman 4+ or docker 20.10+',
      },
    );
  }
}

/** cgroup v1 controllers plus a v2 "unified" tree: the hybrid layout crun refuses. */
async function hostCgroupHybrid(): Promise<boolean> {
  try {
    const mounts = (await readFile('/proc/self/mounts', 'utf8'))
      .split('\n')
      .map((line) => line.split(' '));
    const v1 = mounts.some((m) => m[2] === 'cgroup');
    const v2 = mounts.some((m) => m[2] === 'cgroup2');
    return v1 && v2;
  } catch {
    return false;
  }
}
