import type { EngineInfo } from '../engine/types.js';
import { type Check, pass, warn } from './check.js';

/** The first buildah release without CVE-2024-1753 (a RUN bind mount follows a link out to the host). */
const FIXED = [1, 35, 1] as const;

/**
 * Names the image builder and its known escapes. An old buildah is a warning, not a
 * failure: submissions are checked against an allowlist that refuses every RUN --mount
 * but tmpfs, so the bind mount that escapes cannot be written in a submission.
 */
export function builderCheck(
  info: EngineInfo,
  workflowPolicy: 'trusted' | 'strict' = 'trusted',
): Check {
  if (info.name === 'docker') {
    return pass('builder', `docker ${info.version} builds images (not buildah)`);
  }
  const version = info.buildahVersion;
  const parts = /^(\d+)\.(\d+)\.(\d+)/
    .exec(version ?? '')
    ?.slice(1, 4)
    .map(Number);
  const label = `podman ${info.version} builds with buildah ${version ?? '(version unknown)'}`;
  if (parts && !olderThan(parts, FIXED)) {
    return pass('builder', `${label}: no known build escape`);
  }
  return warn(
    'builder',
    `${label}${parts ? ', older than 1.35.1' : ''}: CVE-2024-1753 lets a RUN --mount=type=bind whose source is a link read (or with rw, write) the host's files during a build. The worker checks every submission Containerfile against an allowlist that refuses RUN --mount of any type but tmpfs, so a submission cannot use it; ${workflowPolicy === 'strict' ? 'the workflow Containerfile is checked the same way (--workflow-build-policy strict)' : 'the workflow Containerfile is trusted with bind mounts (--workflow-build-policy trusted)'}`,
    'upgrade podman/buildah to a release with buildah 1.35.1 or later, or pass --workflow-build-policy strict when the problems are not fully trusted',
  );
}

function olderThan(version: number[], than: readonly number[]): boolean {
  for (let i = 0; i < than.length; i++) {
    const a = version[i] ?? 0;
    const b = than[i] ?? 0;
    if (a !== b) return a < b;
  }
  return false;
}
