import { existsSync } from 'node:fs';
import { cp, lchown, readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { buildUserInfoArgs } from '../engine/args.js';
import type { EngineContext } from '../engine/context.js';
import { type EngineCli, execEngine } from '../engine/exec.js';
import { podmanRuntimeDir } from '../engine/runtime-dir.js';
import { WorkerError } from '../errors.js';

/** The build user `--build-user auto` takes when it exists (scripts/setup-test-engines.sh makes it). */
export const DEFAULT_BUILD_USER = 'cwbuild';
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;

/** An unprivileged host user whose rootless podman builds untrusted contexts. */
export interface BuildUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/**
 * The build user of a `--build-user` setting: `none` (or unset) for none; `auto` for
 * DEFAULT_BUILD_USER when it exists with subordinate ids, else none; a name for that user,
 * which must exist with entries in /etc/subuid and /etc/subgid.
 */
export async function findBuildUser(setting: string | undefined): Promise<BuildUser | undefined> {
  if (!setting || setting === 'none') return undefined;
  const auto = setting === 'auto';
  const name = auto ? DEFAULT_BUILD_USER : setting;
  const problem = (why: string) =>
    new WorkerError('CONFIG_INVALID', `--build-user ${name}: ${why}`, {
      hint: `create the user with subordinate ids (useradd -m ${name}; see scripts/setup-test-engines.sh), or pass --build-user none`,
    });
  if (!USER_NAME.test(name)) throw problem('not a user name');
  const entry = (await readFile('/etc/passwd', 'utf8').catch(() => ''))
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields[0] === name);
  if (!entry) {
    if (auto) return undefined;
    throw problem('no such user in /etc/passwd');
  }
  const uid = Number(entry[2]);
  const gid = Number(entry[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid === 0 || gid === 0) {
    throw problem('the build user must not be root');
  }
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (!text.split('\n').some((line) => line.startsWith(`${name}:`))) {
      throw problem(`no entry in ${file}: rootless podman needs subordinate ids`);
    }
  }
  return { name, uid, gid, home: entry[5] || '/' };
}

/** The engine CLI run as the build user: its own rootless podman, its own storage. */
export function buildUserCli(cli: EngineCli, user: BuildUser): EngineCli {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
  };
  // Without a login session there is no /run/user/<uid>: podman then uses /tmp/podman-run-<uid>,
  // named here so that a build's own TMPDIR does not move it.
  env.XDG_RUNTIME_DIR = podmanRuntimeDir({}, user.uid);
  return {
    name: 'podman',
    path: cli.path,
    workDir: existsSync(user.home) ? user.home : '/',
    user: { uid: user.uid, gid: user.gid, env },
  };
}

/** Where a podman keeps its default store. */
export interface StoragePaths {
  rootless: boolean;
  graphRoot: string;
  runRoot: string;
  driver: string;
}

const storageInfo = new Map<string, Promise<StoragePaths>>();

/** Where the CLI's podman keeps its default store: asked once per user, home, binary and store flags. */
export function storagePaths(cli: EngineCli, timeoutMs: number): Promise<StoragePaths> {
  const key = [
    cli.user?.uid ?? 'self',
    cli.user?.env?.HOME,
    cli.path,
    ...(cli.globalArgs ?? []),
  ].join('\t');
  let known = storageInfo.get(key);
  if (!known) {
    known = readStorage(cli, timeoutMs);
    storageInfo.set(key, known);
    known.catch(() => storageInfo.delete(key));
  }
  return known;
}

/**
 * The engine context of the build user's podman: the rootful context's options and quirks,
 * with its own CLI and storage (asked once per user).
 */
export async function buildUserContext(
  ctx: EngineContext,
  user: BuildUser,
): Promise<EngineContext> {
  const cli = buildUserCli(ctx.cli, user);
  const { rootless, graphRoot, runRoot, driver } = await storagePaths(
    cli,
    ctx.options.callTimeoutMs,
  );
  if (!rootless) throw new WorkerError('ENGINE_FAILED', "The build user's podman is not rootless");
  return {
    cli,
    info: { ...ctx.info, rootless: true, graphRoot, runRoot, storageDriver: driver },
    options: ctx.options,
  };
}

async function readStorage(cli: EngineCli, timeoutMs: number): Promise<StoragePaths> {
  const out = await execEngine(cli, buildUserInfoArgs(), { timeoutMs });
  const [rootless = '', graphRoot = '', runRoot = '', driver = ''] = out.trim().split('\t');
  if (!graphRoot || !runRoot) {
    throw new WorkerError('ENGINE_FAILED', 'podman did not say where it keeps its storage', {
      detail: out.slice(0, 500),
    });
  }
  return { rootless: rootless === 'true', graphRoot, runRoot, driver };
}

/**
 * Puts the build context where the build user can read it, owned by that user: moved when
 * it is on the same file system, else copied (the worker's own folder is private to it).
 */
export async function handContext(dir: string, dest: string, user: BuildUser): Promise<void> {
  try {
    await rename(dir, dest);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
    await cp(dir, dest, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  }
  await chownTree(dest, user);
}

/**
 * Innermost first: a folder is handed over only once everything in it has been, so the
 * user never holds a folder that the worker still walks into (see owned-dirs.ts).
 */
async function chownTree(path: string, user: BuildUser): Promise<void> {
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) await chownTree(child, user);
    else await lchown(child, user.uid, user.gid);
  }
  await lchown(path, user.uid, user.gid);
}
