import { freeBytes } from '../config/free-space.js';
import { hintFor } from '../engine/exec.js';

/** buildah's last words when a RUN step's own command failed: nothing of the host's. */
const RUN_EXITED = /: while running runtime: exit status \d+\s*$/;
/** Below this much free room on its storage, a build that ran out of room is the host's to fix. */
const HOST_FULL_BYTES = 1024 ** 3;

/**
 * Why a build failed on this host, as a hint, or undefined when the build context is to
 * blame. A build's output holds what its RUN steps print, which the participant controls:
 * only buildah's own last error counts, without the STEP text it quotes (the Containerfile's
 * words). A RUN step whose command failed is the context's, unless it ran out of room and
 * the build's storage really is nearly full (below `roomBytes`, the room a build may use,
 * or 1 GiB).
 */
export async function hostHintOf(
  output: string,
  storage: string | undefined,
  roomBytes: number | undefined,
): Promise<string | undefined> {
  const last = output
    .split('\n')
    .filter((line) => line.startsWith('Error: '))
    .at(-1);
  if (last === undefined) return undefined;
  const words = last.replace(/STEP "(?:[^"\\]|\\.|"(?!: ))*": /g, 'STEP: ');
  if (!RUN_EXITED.test(words)) return hintFor(words);
  if (!/no space left on device/i.test(output) || !storage) return undefined;
  const free = await freeBytes(storage).catch(() => undefined);
  if (free === undefined || free >= Math.max(roomBytes ?? 0, HOST_FULL_BYTES)) return undefined;
  return hintFor('no space left on device');
}
