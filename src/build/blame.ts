import { freeBytes } from '../config/free-space.js';
import { hintFor } from '../engine/exec.js';

/** buildah's last words when a RUN step's own command failed: nothing of the host's. */
const RUN_EXITED = /: while running runtime: exit status \d+\s*$/;
/**
 * buildah's error line without what the context wrote into it: the STEP text, every
 * quoted string (a COPY source, a path in the context) and every word of the
 * Containerfile's instructions but RUN (a USER, a WORKDIR, a --chown name buildah echoes
 * unquoted). A comment or a RUN script never reaches that line but inside the STEP text:
 * their words ("error", "not") stay, and a host's error is still seen as one.
 */
export function buildahOwnWords(line: string, containerfile: string): string {
  let words = line
    .replace(/STEP "(?:[^"\\]|\\.|"(?!: ))*": /g, 'STEP: ')
    .replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const echoed = containerfile
    .split('\n')
    .filter((l) => !/^\s*(#|RUN\b|$)/i.test(l))
    .map((l) => l.replace(/^\s*[A-Za-z]+\s+/, ''));
  const written = new Set(
    echoed
      .join(' ')
      .split(/[\s"'[\],=:]+/)
      .filter((w) => w.length >= 3),
  );
  for (const word of [...written].sort((a, b) => b.length - a.length)) {
    words = words.split(word).join('');
  }
  return words;
}

/** Below this much free room on its storage, a build that ran out of room is the host's to fix. */
const HOST_FULL_BYTES = 1024 ** 3;

/**
 * Why a build failed on this host, as a hint, or undefined when the build context is to
 * blame. A build's output holds what its RUN steps print, which the participant controls:
 * only buildah's own last error counts, without what the context wrote into it
 * (buildahOwnWords). Running out of room is the host's only when the build's storage really
 * is nearly full (below `roomBytes`, the room a build may use, or 1 GiB); a RUN step whose
 * command failed otherwise is the context's.
 */
export async function hostHintOf(
  output: string,
  storage: string | undefined,
  roomBytes: number | undefined,
  containerfile = '',
): Promise<string | undefined> {
  const last = output
    .split('\n')
    .filter((line) => line.startsWith('Error: '))
    .at(-1);
  if (last === undefined) return undefined;
  const words = buildahOwnWords(last, containerfile);
  const runExited = RUN_EXITED.test(words);
  // Out of room: the host's only when its storage is found nearly full, whatever the words.
  if (/no space left on device/i.test(runExited ? output : last)) {
    return (await nearlyFull(storage, roomBytes)) ? hintFor('no space left on device') : undefined;
  }
  return runExited ? undefined : hintFor(words);
}

async function nearlyFull(storage: string | undefined, roomBytes: number | undefined) {
  if (!storage) return false;
  const free = await freeBytes(storage).catch(() => undefined);
  return free !== undefined && free < Math.max(roomBytes ?? 0, HOST_FULL_BYTES);
}
