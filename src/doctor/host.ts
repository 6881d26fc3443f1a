import { existsSync } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { procStatFields } from '../config/proc-stat.js';
import { liveHolderPid } from '../config/state-lock.js';
import { type Check, fail, pass, skip, warn } from './check.js';

/** statfs(2) types of filesystems that live in memory. */
const MEMORY_FILESYSTEMS = new Map([
  [0x01021994, 'tmpfs'],
  [0x858458f6, 'ramfs'],
]);

/**
 * The state folder outlives the worker: it holds the worker's id, by which a restart finds
 * what the last run left. A folder in memory, or in a container's own layer, is a new id at
 * every boot or re-creation, and the old id's containers and volumes are never cleaned.
 */
export async function stateFolderCheck(
  stateDir: string,
  inContainer = existsSync('/run/.containerenv') || existsSync('/.dockerenv'),
): Promise<Check> {
  const name = 'state-folder';
  let type: number;
  try {
    type = (await statfs(stateDir)).type;
  } catch (error) {
    return fail(name, `cannot read the state folder ${stateDir}`, error);
  }
  const memory = MEMORY_FILESYSTEMS.get(type);
  if (memory) {
    return warn(
      name,
      `the state folder ${stateDir} is on ${memory}: the worker's id is lost at the next boot, and what this run leaves behind is never cleaned`,
      'pass --state-dir with a folder on a disk',
    );
  }
  if (inContainer && !(await onOwnMount(stateDir))) {
    return warn(
      name,
      `the state folder ${stateDir} is inside this container's own filesystem: a re-created container is a new worker, and the old one's containers and volumes are never cleaned`,
      `mount a volume there (podman run -v compute-worker-state:${stateDir} ...)`,
    );
  }
  return pass(name, `the state folder ${stateDir} persists (on disk)`);
}

/** Whether the folder, or a folder above it other than /, is a mount point of its own. */
async function onOwnMount(dir: string): Promise<boolean> {
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  // Field 5 is the mount point, with spaces and the like written as octal escapes.
  const points = text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((point): point is string => !!point && point !== '/')
    .map((point) =>
      point.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))),
    );
  return points.some((point) => dir === point || dir.startsWith(`${point}/`));
}

/**
 * The daemon on this state folder in a process group of its own. In its supervisor's group,
 * a signal to the group (Ctrl-C, timeout(1), a shell's job control) reaches the worker and
 * every child it did not move to a group of its own at once: nothing is left to drain.
 */
export async function processGroupCheck(stateDir: string): Promise<Check> {
  const name = 'process-group';
  const pid = await liveHolderPid(stateDir);
  if (pid === undefined) return skip(name, `no daemon runs on the state folder ${stateDir}`);
  const own = await procStatFields(pid);
  const group = own?.[2];
  const parent = own?.[1];
  if (!group || !parent) return skip(name, `cannot read the daemon's process (pid ${pid})`);
  const parentGroup = (await procStatFields(parent))?.[2];
  if (parentGroup === group && parent !== '1') {
    const command = (await readFile(`/proc/${parent}/comm`, 'utf8').catch(() => '?')).trim();
    return warn(
      name,
      `the daemon (pid ${pid}) shares process group ${group} with its parent ${command} (pid ${parent}): a signal to that group reaches the worker and its engine calls at once`,
      'start it in a group of its own (setsid compute-worker run ..., or a systemd unit with KillMode=mixed, as packaging/ ships)',
    );
  }
  return pass(name, `the daemon (pid ${pid}) runs in a process group of its own (${group})`);
}
