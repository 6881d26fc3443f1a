import { buildUserCli, findBuildUser } from '../build/user.js';
import { workerLiveDir } from '../config/paths.js';
import { lockHolder } from '../config/state-lock.js';
import { danglingImagesArgs, imageNamesArgs } from '../engine/args.js';
import { execEngine } from '../engine/exec.js';
import { LABEL_WORKER } from '../engine/labels.js';
import type { Engine, EngineOptions, ManagedObject } from '../engine/types.js';
import { type Check, fail, pass, skip, warn } from './check.js';

/** Whether a live worker holds the id (see config/paths.ts workerLiveDir). */
export type IsLive = (workerId: string) => Promise<boolean>;

/** Every worker, daemon or task exec, holds the lock of its live folder while it runs. */
export const liveWorker: IsLive = async (workerId) =>
  (await lockHolder(workerLiveDir(workerId))) === 'alive';

/**
 * Containers and volumes of a worker that is gone: a worker re-created under a new id
 * (a container without its state volume, a state folder on tmpfs) never cleans the old
 * one's, and on a fleet they fill the disk unseen.
 */
export async function orphansCheck(engine: Engine, isLive: IsLive): Promise<Check> {
  let listed: Awaited<ReturnType<Engine['listManaged']>>;
  try {
    listed = await engine.listManaged();
  } catch (error) {
    return fail('orphans', "cannot list the workers' containers and volumes", error);
  }
  const owners = new Map<string, boolean>();
  const orphaned = async (objects: ManagedObject[]) => {
    const found: ManagedObject[] = [];
    for (const object of objects) {
      // An image's labels inherited alone name no worker: not a worker's container.
      if (!object.worker) continue;
      let live = owners.get(object.worker);
      if (live === undefined) {
        live = await isLive(object.worker);
        owners.set(object.worker, live);
      }
      if (!live) found.push(object);
    }
    return found;
  };
  const containers = await orphaned(listed.containers);
  const volumes = await orphaned(listed.volumes);
  if (containers.length === 0 && volumes.length === 0) {
    const live = [...owners.values()].filter(Boolean).length;
    return pass(
      'orphans',
      `every compute-worker container and volume belongs to a live worker (${live} seen)`,
    );
  }
  const dead = [...new Set([...containers, ...volumes].map((o) => o.worker as string))];
  const cli = engine.info.name;
  return warn(
    'orphans',
    `${containers.length} container(s) and ${volumes.length} volume(s) belong to no live worker on this host: worker(s) ${dead.join(', ')}`,
    `start that worker again on its --state-dir (it removes what it left at start-up), or remove them by hand: ${cli} rm -f $(${cli} ps -aq --filter label=${LABEL_WORKER}=ID) and ${cli} volume rm $(${cli} volume ls -q --filter label=${LABEL_WORKER}=ID). A worker started with another TMPDIR than doctor's looks dead here`,
  );
}

/**
 * Images left in the build user's own store: dangling layers of an interrupted build or
 * move, or a worker's built image that never reached the host's store. Nothing removes
 * them but the worker that made them, and a later build must never find them.
 */
export async function buildUserImagesCheck(
  engine: Engine,
  options: Pick<EngineOptions, 'buildUser' | 'callTimeoutMs'>,
): Promise<Check> {
  const name = 'build-user-images';
  if (engine.info.name !== 'podman' || engine.info.rootless || engine.info.engineHost) {
    return skip(name, 'no build user: builds run in the engine itself');
  }
  let user: Awaited<ReturnType<typeof findBuildUser>>;
  try {
    user = await findBuildUser(options.buildUser ?? 'auto');
  } catch (error) {
    return fail(name, 'the build user is not usable', error);
  }
  if (!user) return skip(name, 'no build user');
  const cli = buildUserCli({ name: 'podman', path: engine.info.path }, user);
  const call = { timeoutMs: options.callTimeoutMs };
  try {
    const [dangling, named] = await Promise.all([
      execEngine(cli, danglingImagesArgs(), call),
      execEngine(cli, imageNamesArgs(), call),
    ]);
    const loose = dangling.split(/\s+/).filter(Boolean).length;
    const built = named
      .split('\n')
      .filter((line) => line.split('\t')[1]?.startsWith('localhost/compute-worker/')).length;
    if (loose === 0 && built === 0) {
      return pass(name, `the build user ${user.name}'s store holds no leftover image`);
    }
    return warn(
      name,
      `the build user ${user.name}'s store holds ${loose} dangling image(s) and ${built} built image(s) of a worker: what interrupted builds left`,
      `restart the workers of this host (each removes its own), or as ${user.name}: podman image prune --force (podman rmi for the localhost/compute-worker/ images)`,
    );
  } catch (error) {
    return fail(name, `cannot list the build user ${user.name}'s images`, error);
  }
}
