import { statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The folder a rootless podman keeps its pause process in, and so the user namespace it
 * joins: $XDG_RUNTIME_DIR, else /run/user/UID when that user owns it, else
 * $TMPDIR/podman-run-UID. A call given a TMPDIR of its own (a build's) would otherwise
 * start a namespace and a pause process of its own, which the calls without it never see.
 */
export function podmanRuntimeDir(env: Readonly<Record<string, string | undefined>>, uid: number) {
  if (env.XDG_RUNTIME_DIR) return env.XDG_RUNTIME_DIR;
  const session = `/run/user/${uid}`;
  if (ownedBy(session, uid)) return session;
  return join(env.TMPDIR || '/tmp', `podman-run-${uid}`);
}

function ownedBy(path: string, uid: number): boolean {
  try {
    const stats = statSync(path);
    return stats.isDirectory() && stats.uid === uid;
  } catch {
    return false;
  }
}
