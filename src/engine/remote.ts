import { WorkerError } from '../errors.js';
import type { EngineInfo } from './types.js';

/** Schemes both remote clients take (podman --url; docker -H also takes fd:// and npipe://). */
const SCHEMES = new Set(['unix:', 'ssh:', 'tcp:']);

/**
 * The remote engine to drive: --engine-host, else the variable the engine's own CLI reads
 * (CONTAINER_HOST for podman, DOCKER_HOST for docker), made explicit so that the worker
 * knows the engine is not on this host. Undefined: the local engine.
 */
export function resolveEngineHost(
  engine: 'podman' | 'docker',
  option: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const variable = engine === 'podman' ? 'CONTAINER_HOST' : 'DOCKER_HOST';
  const value = option ?? (env[variable] || undefined);
  if (value === undefined) return undefined;
  const from = option !== undefined ? '--engine-host' : variable;
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || !SCHEMES.has(url.protocol) || /[\s\p{Cc}]/u.test(value)) {
    throw new WorkerError(
      'CONFIG_INVALID',
      `${from} ${JSON.stringify(redactEngineHost(value))} is not an engine URL`,
      {
        hint: 'give unix:///run/podman/podman.sock, ssh://user@host/run/podman/podman.sock or tcp://host:port',
      },
    );
  }
  return value;
}

/** The URL as it may be shown and logged: a password in it is replaced. */
export function redactEngineHost(value: string): string {
  try {
    const url = new URL(value);
    if (!url.password) return value;
    url.password = '***';
    return url.toString();
  } catch {
    return value.replace(/\/\/([^/:@]*):[^/@]*@/, '//$1:***@');
  }
}

/**
 * What the worker cannot do against a remote engine, because it needs the engine's host
 * folders or its processes: said once at start-up (the daemon's log, `task exec`, doctor),
 * never left as a silent hole. Empty for a local engine.
 */
export function remoteEngineGaps(info: Pick<EngineInfo, 'name' | 'engineHost'>): string[] {
  if (!info.engineHost) return [];
  const gaps = [
    "--disk-limit is not measured in a task's volumes, nor in a build's layers while it builds (their folders are on the engine's host); a built image's size is still checked",
    "--min-free-disk and doctor's free-space check do not see the engine's storage, only this host's temp folder",
    "GPUs (--learn-gpus, --predict-gpus) are found on this host (nvidia-smi, CDI specs), not on the engine's: give tasks GPUs only where both are the same machine",
  ];
  if (info.name === 'podman') {
    gaps.push(
      "an untrusted build's --build-pids-limit is not applied and its memory and CPU limits are podman build flags (the worker's own build cgroup needs a local engine)",
      "a build stopped at its timeout or cancelled goes on in the engine's service until it ends (podman 4.3 does not stop it when its client goes), and a killed build's working containers cannot be found from here",
    );
  }
  return gaps;
}

/** One line for logs and doctor: where the engine is, and what is not enforced there. */
export function remoteEngineWarning(info: Pick<EngineInfo, 'name' | 'engineHost'>): string {
  const gaps = remoteEngineGaps(info);
  if (gaps.length === 0) return '';
  return `remote ${info.name} at ${redactEngineHost(info.engineHost ?? '')}: not enforced here: ${gaps.join('; ')}`;
}
