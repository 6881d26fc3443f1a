import { WorkerError } from '../errors.js';
import type { EngineContext } from './context.js';
import { capDetail, engineFailure, hintFor } from './exec.js';

/**
 * runc failing to set up the image's own working directory in its root filesystem
 * (`WORKDIR /proc/self/fd/7`: "error during container init: mkdir /proc/self/fd/7: not a
 * directory"; in a user namespace of its own, "chdir to cwd ("/proc/self/fd/7") set in
 * config.json failed"): the image is wrong, not the engine.
 */
const IMAGE_WORKDIR_REFUSED =
  /(error during container init: (mkdir|chdir)|chdir to cwd \("[^\n]*"\) set in config\.json failed)[^\n]*: (not a directory|no such file or directory|file exists|too many levels of symbolic links)/i;

/**
 * runc makes the working directory once every mount is in place: a WORKDIR under /sys, or
 * under a folder the task mounts read-only, cannot be made ("error during container init:
 * mkdir /sys/kernel/foo: read-only file system"). The root filesystem is the image's own
 * layer, so no host filesystem is named here.
 */
const WORKDIR_READ_ONLY = /error during container init: mkdir (\/[^\n:]*): read-only file system/i;

/**
 * runc mounting onto a path of the image that is of the wrong kind: a file where a folder
 * must be ("error mounting \"tmpfs\" to rootfs at \"/dev\": mount tmpfs:/dev ...: not a
 * directory"; "tmpcopyup: failed to copy /tmp ...: not a directory" for a /tmp that is a
 * file), or a folder where the engine mounts one of its files (/etc/hosts).
 */
const MOUNT_NOT_A_DIRECTORY =
  /error mounting "([^"\n]*)" to rootfs at "([^"\n]+)": [^\n]*: not a directory/i;

/** runc refusing proc or sysfs on what is not a real folder of the image (a file, a link). */
const MOUNT_NOT_ORDINARY =
  /error mounting "[^"\n]*" to rootfs at "([^"\n]+)": filesystem "[^"\n]*" must be mounted on ordinary directory/i;

/**
 * podman copying the image's content into a task volume and finding a file on the way to
 * the mount point ("identifying source directory for copy up into volume cw-vol-...: lstat
 * <its store>/merged/data/model: not a directory" where the image's /data is a file).
 */
const VOLUME_COPY_UP = /copy up into volume [^\s:]+: lstat ([^\s:]+): not a directory/i;

/** podman linking /etc/mtab into an image whose /etc is a file. */
const ETC_NOT_A_FOLDER = /creating \/etc\/mtab symlink: not a directory/i;

/** What is wrong with the image, and the paths of the image it names. */
export interface ImageFault {
  reason: string;
  paths: string[];
}

/**
 * What about the image keeps the engine from starting it, in words for the participant, or
 * undefined when the engine's words do not say the image is at fault. `mountTargets`: the
 * folders the task mounts into the container.
 */
export function imageStartFault(
  stderr: string,
  mountTargets: readonly string[],
): ImageFault | undefined {
  // A full store, a missing runtime, a cgroup the runtime cannot set up: the host's.
  if (hintFor(stderr)) return undefined;
  const readOnly = WORKDIR_READ_ONLY.exec(stderr)?.[1];
  if (readOnly) {
    const reason = `the image's working directory (WORKDIR) ${readOnly} cannot be made: it is on a read-only filesystem of the container`;
    return { reason, paths: [readOnly] };
  }
  if (IMAGE_WORKDIR_REFUSED.test(stderr)) {
    return { reason: "the image's working directory (WORKDIR) cannot be made", paths: [] };
  }
  const notOrdinary = MOUNT_NOT_ORDINARY.exec(stderr)?.[1];
  if (notOrdinary)
    return { reason: `the image's ${notOrdinary} is not a folder`, paths: [notOrdinary] };
  const mount = MOUNT_NOT_A_DIRECTORY.exec(stderr);
  if (mount?.[1] !== undefined && mount[2] !== undefined) {
    return { reason: wrongKind(mount[1], mount[2]), paths: [mount[2]] };
  }
  const copyUp = VOLUME_COPY_UP.exec(stderr)?.[1];
  if (copyUp) {
    const target = mountTargets.find((t) => copyUp.endsWith(t));
    return target
      ? { reason: `in the image, a folder on the path to ${target} is a file`, paths: [target] }
      : {
          reason: "in the image, a folder on the path to one of the task's folders is a file",
          paths: [],
        };
  }
  if (ETC_NOT_A_FOLDER.test(stderr)) {
    return { reason: "the image's /etc is a file, not a folder", paths: ['/etc'] };
  }
  return undefined;
}

/**
 * A filesystem (tmpfs, proc) or a volume's folder is mounted on a folder; anything else the
 * engine mounts (/etc/hosts, its init) is one of its files.
 */
function wrongKind(source: string, target: string): string {
  const folder = !source.startsWith('/') || source.endsWith('/_data');
  if (!folder) {
    return `the engine mounts a file at ${target}, and the image has a folder there or a file on the path to it`;
  }
  const topLevel = target.lastIndexOf('/') === 0;
  return topLevel
    ? `the image's ${target} is a file, not a folder`
    : `the image's ${target}, or a folder above it, is a file, not a folder`;
}

/** A start the engine refused: the image's fault where its words say so, else the engine's. */
export function startFailure(
  ctx: EngineContext,
  stderr: string,
  exitCode: number,
  mountTargets: readonly string[],
): WorkerError {
  const fault = imageStartFault(stderr, mountTargets);
  if (fault) {
    return new WorkerError('CONTAINER_FAILED', `The container could not start: ${fault.reason}`, {
      detail: capDetail(stderr),
      imagePaths: fault.paths,
    });
  }
  // The image's own command is missing or not executable: the submission is at fault.
  if (
    !hintFor(stderr) &&
    /executable file not found|no such file or directory|permission denied/i.test(stderr)
  ) {
    return new WorkerError('CONTAINER_FAILED', 'The container could not start its command', {
      detail: capDetail(stderr),
    });
  }
  return engineFailure(`${ctx.cli.name} start`, exitCode, stderr);
}
