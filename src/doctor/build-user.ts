import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { DEFAULT_BUILD_USER, findBuildUser } from '../build/user.js';
import { LABEL_WORKER } from '../engine/labels.js';
import { BUSYBOX_CONTAINERFILE, BUSYBOX_SKELETON, contextTarGz } from '../engine/probe-context.js';
import type { Engine, EngineOptions } from '../engine/types.js';
import { type Check, fail, pass, warn } from './check.js';

const NAME = 'build-namespace';
const HINT = `create the build user (useradd -m ${DEFAULT_BUILD_USER}: it needs entries in /etc/subuid and /etc/subgid and the uidmap package; scripts/setup-test-engines.sh does it) and keep --build-user auto, or pass --build-user NAME`;

/**
 * Builds a context whose RUN step prints its uid map and capabilities, as a submission's
 * would run (a fresh build each time: a comment of its own), and says whose root it was.
 */
export async function buildNamespaceCheck(
  engine: Engine,
  options: Pick<EngineOptions, 'buildUser' | 'buildUserns'>,
  busyboxPath = '/bin/busybox',
): Promise<Check> {
  if (engine.info.name === 'docker') {
    return warn(
      NAME,
      "docker builds in its daemon: a build's RUN steps are the daemon's root unless dockerd runs with userns-remap",
      'prefer rootful podman with a build user for untrusted submissions',
    );
  }
  let busybox: Buffer;
  try {
    busybox = await readFile(busyboxPath);
  } catch (error) {
    return fail(NAME, `no static busybox at ${busyboxPath} to build with`, error);
  }
  const lines: string[] = [];
  let image: string | undefined;
  try {
    const user = engine.info.rootless
      ? undefined
      : await findBuildUser(options.buildUser ?? 'auto');
    const containerfile = [
      ...BUSYBOX_CONTAINERFILE,
      `RUN head -n 1 /proc/self/uid_map | sed "s/^/uid_map: /"; grep "^CapEff" /proc/self/status # ${randomBytes(6).toString('hex')}`,
    ];
    const built = await engine.buildImage({
      role: 'probe',
      context: Readable.from([
        await contextTarGz({
          Containerfile: `${containerfile.join('\n')}\n`,
          busybox,
          ...BUSYBOX_SKELETON,
        }),
      ]),
      labels: { [LABEL_WORKER]: `doctor-${randomBytes(4).toString('hex')}` },
      onOutputLine: (line) => lines.push(line),
    });
    image = built.image;
    return judgeBuildNamespace(lines, engine.info.rootless, options, user?.name);
  } catch (error) {
    return fail(NAME, 'cannot build as a submission is built', error);
  } finally {
    if (image) await engine.removeImage(image).catch(() => undefined);
  }
}

/** Whose root a RUN step was, from the lines it printed (see buildNamespaceCheck). */
export function judgeBuildNamespace(
  lines: readonly string[],
  rootless: boolean,
  options: Pick<EngineOptions, 'buildUserns'>,
  user: string | undefined,
): Check {
  const map = lines
    .find((line) => line.startsWith('uid_map:'))
    ?.replace('uid_map:', '')
    .trim()
    .split(/\s+/)
    .map(Number);
  const caps = lines.find((line) => line.startsWith('CapEff:'))?.split(/\s+/)[1] ?? '?';
  if (map?.length !== 3 || map.some(Number.isNaN)) {
    return fail(NAME, 'the build did not print its uid map', undefined, HINT);
  }
  const [, host, count] = map as [number, number, number];
  if (host === 0 && count === 4_294_967_295) {
    return warn(
      NAME,
      `an untrusted build's RUN steps run as the host's root (uid map: identity; CapEff ${caps}): a build escape is an escape to root`,
      HINT,
    );
  }
  const whose = user
    ? `the build user ${user} (host uid ${host}), whose rootless podman builds`
    : rootless
      ? `host uid ${host}, the rootless engine's user`
      : `host uid ${host} (--build-userns ${options.buildUserns ?? ''})`;
  return pass(
    NAME,
    `an untrusted build's RUN steps run as root of a user namespace, which is ${whose}; CapEff ${caps}`,
  );
}
