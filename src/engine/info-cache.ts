import { createHash } from 'node:crypto';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * `podman info` takes a second or more (it walks the whole store), and a one-off `task exec`
 * needs it before anything else. Its answer is kept in the state folder for a while, valid
 * only while nothing it depends on changed: the CLI binary, the user, the boot, podman's
 * configuration files and environment, and which OCI runtimes are installed. `doctor` and
 * the daemon always ask podman.
 */
export const INFO_CACHE_MAX_AGE_MS = 60 * 60 * 1000;

const CONFIG_FILES = [
  '/etc/containers/containers.conf',
  '/etc/containers/containers.conf.d',
  '/etc/containers/storage.conf',
  '/usr/share/containers/containers.conf',
  '/usr/share/containers/storage.conf',
  '/usr/bin/crun',
  '/usr/bin/runc',
  '/usr/sbin/runc',
  '/usr/bin/conmon',
];

const ENV = [
  'CONTAINER_HOST',
  'CONTAINERS_CONF',
  'CONTAINERS_STORAGE_CONF',
  'XDG_CONFIG_HOME',
  'XDG_RUNTIME_DIR',
  'HOME',
  'PATH',
];

interface CacheFile {
  key: string;
  savedAt: number;
  info: unknown;
}

/** What the cached answer depends on, as one digest. */
export async function infoCacheKey(cliPath: string): Promise<string> {
  const home = process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config');
  const files = [
    cliPath,
    ...CONFIG_FILES,
    join(home, 'containers/containers.conf'),
    join(home, 'containers/storage.conf'),
  ];
  const stats = await Promise.all(
    files.map(async (file) => {
      const s = await stat(file).catch(() => undefined);
      return [file, s ? [s.ino, s.size, s.mtimeMs, s.ctimeMs] : null];
    }),
  );
  const boot = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '');
  const parts = {
    v: 1,
    uid: process.getuid?.(),
    gid: process.getgid?.(),
    boot: boot.trim(),
    env: ENV.map((name) => [name, process.env[name] ?? null]),
    stats,
  };
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/** The cached answer when it is fresh and its key matches; undefined otherwise. */
export async function readInfoCache(file: string, key: string, now = Date.now()) {
  try {
    const cached = JSON.parse(await readFile(file, 'utf8')) as CacheFile;
    const age = now - cached.savedAt;
    if (cached.key !== key || !(age >= 0 && age < INFO_CACHE_MAX_AGE_MS)) return undefined;
    return cached.info;
  } catch {
    return undefined;
  }
}

/** Saves an answer; a failure only means the next process asks podman again. */
export async function writeInfoCache(file: string, key: string, info: unknown): Promise<void> {
  const body: CacheFile = { key, savedAt: Date.now(), info };
  const temp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(temp, JSON.stringify(body), { mode: 0o600 });
    await rename(temp, file);
  } catch {
    // The state folder is read-only or full: nothing is lost but time.
  }
}
