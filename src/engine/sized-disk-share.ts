import { realpath } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { execHost } from './exec.js';
import { makeSharedArgs } from './sized-disk-args.js';
import { type MountEntry, mountTable } from './sized-disk-release.js';

const HOST_CALL_MS = 30_000;

/**
 * Makes the mount that holds `path` shared, where it is not, so that what the worker mounts
 * under it and later unmounts is unmounted too in every mount namespace copied meanwhile.
 * Without it (a host whose root is private: no systemd, a container), a namespace made
 * while a task's sized filesystem is mounted (the build user's rootless podman starting its
 * pause process, say) keeps its own copy of that mount for as long as it lives: the loop
 * device stays attached and its blocks stay taken on the host's disk after the task. A
 * systemd host has every mount shared from boot; there this changes nothing.
 */
export async function shareMountHolding(path: string): Promise<void> {
  const real = await realpath(path).catch(() => resolve(path));
  const holder = holdingMount(await mountTable(), real);
  if (!holder || holder.shared) return;
  await execHost('mount', makeSharedArgs(holder.mountPoint), HOST_CALL_MS);
}

/** The mount `path` lies on: the last one mounted at the longest mount point above it. */
export function holdingMount(mounts: readonly MountEntry[], path: string): MountEntry | undefined {
  let found: MountEntry | undefined;
  for (const mount of mounts) {
    const point = mount.mountPoint;
    const above = point === '/' || path === point || path.startsWith(`${point}${sep}`);
    if (!above) continue;
    if (!found || point.length > found.mountPoint.length) found = mount;
    // Mounted over the same point later: the table lists it after the one it hides.
    else if (point.length === found.mountPoint.length) found = mount;
  }
  return found;
}
