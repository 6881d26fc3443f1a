import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { EngineOptions } from '../../src/engine/types.js';
import { serviceUrl } from './podman-service.js';

export type VariantId = 'podman-rootful' | 'podman-rootless' | 'docker' | 'podman-remote';

export interface EngineVariant {
  id: VariantId;
  options: EngineOptions;
  /** Why this variant cannot run here, or undefined when it should. */
  unavailable(): string | undefined;
}

const bounds = { buildTimeoutMs: 120_000, callTimeoutMs: 60_000 };
const isRoot = () => process.getuid?.() === 0;
const rootlessWrapper = fileURLToPath(new URL('./rootless-podman.sh', import.meta.url));
const hasRootlessUser = () => {
  try {
    return isRoot() && /^cwrootless:/m.test(readFileSync('/etc/passwd', 'utf8'));
  } catch {
    return false;
  }
};

/** The engines the conformance suite runs against; scripts/setup-test-engines.sh prepares them. */
export const VARIANTS: Record<VariantId, EngineVariant> = {
  // crun cannot run on the CI host's hybrid cgroups; runc can.
  'podman-rootful': {
    id: 'podman-rootful',
    options: { engine: 'podman', enginePath: '/usr/bin/podman', ociRuntime: 'runc', ...bounds },
    unavailable: () =>
      !existsSync('/usr/bin/podman')
        ? '/usr/bin/podman is not installed'
        : !isRoot()
          ? 'not running as root'
          : undefined,
  },
  'podman-rootless': {
    id: 'podman-rootless',
    options: { engine: 'podman', enginePath: rootlessWrapper, ociRuntime: 'runc', ...bounds },
    unavailable: () =>
      !existsSync('/usr/bin/podman')
        ? '/usr/bin/podman is not installed'
        : !hasRootlessUser()
          ? 'needs root and the user cwrootless (scripts/setup-test-engines.sh)'
          : undefined,
  },
  // /usr/bin/docker is Debian's client matching the daemon; /usr/local/bin/docker may be another.
  docker: {
    id: 'docker',
    options: { engine: 'docker', enginePath: '/usr/bin/docker', ...bounds },
    unavailable: () =>
      !existsSync('/usr/bin/docker') ? '/usr/bin/docker is not installed' : undefined,
  },
  // Rootful podman's service on a socket the test file starts (test/support/podman-service.ts);
  // the runtime is the service's (a remote client has no --runtime).
  'podman-remote': {
    id: 'podman-remote',
    options: {
      engine: 'podman',
      enginePath: '/usr/bin/podman',
      engineHost: serviceUrl(),
      ...bounds,
    },
    unavailable: () =>
      !existsSync('/usr/bin/podman')
        ? '/usr/bin/podman is not installed'
        : !isRoot()
          ? 'not running as root'
          : undefined,
  },
};

/** CI sets CW_TEST_REQUIRE_ENGINES=1: a missing engine is then a failure, not a skip. */
export const requireEngines = process.env.CW_TEST_REQUIRE_ENGINES === '1';

/**
 * Why this variant cannot run here (its tests are then skipped), or undefined when it can;
 * where CI requires the engines, a missing one throws instead.
 */
export function unavailableUnlessRequired(variant: EngineVariant): string | undefined {
  const why = variant.unavailable();
  if (why && requireEngines)
    throw new Error(`${variant.id} is required (CW_TEST_REQUIRE_ENGINES=1) but ${why}`);
  return why;
}

/**
 * The engines that run without a service of their own: podman-remote needs the
 * `podman system service` its test file starts (test/support/podman-service.ts).
 */
export const LOCAL_VARIANTS = Object.values(VARIANTS).filter((v) => v.id !== 'podman-remote');
