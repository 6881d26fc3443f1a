import { readFile } from 'node:fs/promises';
import { ROOTLESS_USERNS_MIN_SIZE } from '../engine/args.js';
import type { EngineInfo, RunLimits } from '../engine/types.js';
import { type Check, fail, pass, skip, warn } from './check.js';

const NAME = 'userns-range';
/** A full-size image (Debian's has files and users up to 65534) takes this many ids. */
export const FULL_NAMESPACE = 65536;
/** Below this many namespaces a busy worker runs out: a learn task keeps 3 containers until it ends. */
const FEW_NAMESPACES = 16;
const ROOTFUL_HINT =
  'add a range no user owns to both files, e.g. `containers:2147483647:2147483648` in /etc/subuid and /etc/subgid (scripts/setup-test-engines.sh does it)';

export interface SubIdEntry {
  name: string;
  start: number;
  count: number;
}

export function parseSubIds(text: string): SubIdEntry[] {
  return text.split('\n').flatMap((line) => {
    const [name, start, count] = line.trim().split(':');
    if (!name || !/^\d+$/.test(start ?? '') || !/^\d+$/.test(count ?? '')) return [];
    return [{ name, start: Number(start), count: Number(count) }];
  });
}

/**
 * Whether every container can get a user namespace of its own: rootful podman's
 * --userns=auto draws them from the `containers` entry of /etc/subuid and /etc/subgid,
 * rootless podman's from its user's range; docker has only its daemon's userns-remap.
 */
export async function usernsRangeCheck(
  info: Pick<EngineInfo, 'name' | 'rootless' | 'engineHost' | 'usernsRemap' | 'subordinateIds'>,
  limits: Pick<RunLimits, 'user'>,
  files = { subuid: '/etc/subuid', subgid: '/etc/subgid' },
): Promise<Check> {
  if (info.name === 'docker') return dockerUserns(info.usernsRemap === true);
  if (info.engineHost) {
    return skip(
      NAME,
      "the engine's host is not this one: its /etc/subuid and /etc/subgid are not read here (the probe container's uid map shows whether its ids are its own)",
    );
  }
  if (info.rootless) return rootlessRange(info.subordinateIds, limits);
  const [uids, gids] = await Promise.all(
    [files.subuid, files.subgid].map((file) => readFile(file, 'utf8').catch(() => '')),
  );
  return judgeSubIds(parseSubIds(uids ?? ''), parseSubIds(gids ?? ''), files);
}

/** Rootful podman: the `containers` entries, their size, and that no user's range overlaps them. */
export function judgeSubIds(
  uids: SubIdEntry[],
  gids: SubIdEntry[],
  files = { subuid: '/etc/subuid', subgid: '/etc/subgid' },
): Check {
  const found: string[] = [];
  let namespaces = Number.POSITIVE_INFINITY;
  for (const [entries, file] of [
    [uids, files.subuid],
    [gids, files.subgid],
  ] as const) {
    const own = entries.find((e) => e.name === 'containers');
    if (!own) {
      return fail(
        NAME,
        `${file} has no \`containers\` entry: rootful podman cannot give each container a user namespace of its own (--userns=auto), so every container would fail to start`,
        undefined,
        ROOTFUL_HINT,
      );
    }
    if (own.count < FULL_NAMESPACE) {
      return fail(
        NAME,
        `the \`containers\` entry of ${file} has ${own.count} ids, fewer than the ${FULL_NAMESPACE} one container of a full-size image needs`,
        undefined,
        ROOTFUL_HINT,
      );
    }
    const overlap = entries.find(
      (e) => e !== own && e.start < own.start + own.count && own.start < e.start + e.count,
    );
    if (overlap) {
      return fail(
        NAME,
        `the \`containers\` entry of ${file} (${own.start}:${own.count}) overlaps the range of ${overlap.name} (${overlap.start}:${overlap.count}): a container's ids could be that user's`,
        undefined,
        'give `containers` a range of its own, above every user range',
      );
    }
    found.push(`${own.start}:${own.count}`);
    namespaces = Math.min(namespaces, Math.floor(own.count / FULL_NAMESPACE));
  }
  const message = `containers ${found.join(' (uids), ')} (gids) in ${files.subuid} and ${files.subgid}: room for ${namespaces} user namespaces of a full-size image at once`;
  return namespaces < FEW_NAMESPACES
    ? warn(NAME, `${message}, few for a busy worker`, ROOTFUL_HINT)
    : pass(NAME, message);
}

function rootlessRange(
  ids: { uids: number; gids: number } | undefined,
  limits: Pick<RunLimits, 'user'>,
): Check {
  const hint =
    "give the worker's user a range of 65536 subordinate ids in /etc/subuid and /etc/subgid (usermod --add-subuids/--add-subgids), then `podman system migrate`";
  const size = Math.max(
    ROOTLESS_USERNS_MIN_SIZE,
    ...limits.user.split(':').map((id) => Number(id) + 1),
  );
  const room = ids ? Math.floor(Math.min(ids.uids, ids.gids) / size) : 0;
  const message = `rootless podman's user has ${ids ? `${ids.uids} subordinate uids and ${ids.gids} gids` : 'no subordinate ids podman names'}: room for ${room} containers of ${size} ids each`;
  // A learn task keeps its three containers (and their ids) until it ends.
  return room < 3 ? fail(NAME, message, undefined, hint) : pass(NAME, message);
}

function dockerUserns(remapped: boolean): Check {
  return remapped
    ? warn(
        NAME,
        "docker runs with userns-remap: containers' ids are not the host's, but every container shares the daemon's one range, so a task's processes count against the same RLIMIT_NPROC (--nproc) as every other task's",
        'for a user namespace per container use rootful podman (--engine podman)',
      )
    : warn(
        NAME,
        "docker runs without userns-remap: a container's uid 1000 is the host's uid 1000, shared by every task (and any host user with that uid): one task's processes count against the others' RLIMIT_NPROC (--nproc), and their files are that host user's",
        'start dockerd with --userns-remap=default (or "userns-remap" in daemon.json), or better, use rootful podman, which gives each container its own namespace',
      );
}
