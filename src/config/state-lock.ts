import { randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkerError } from '../errors.js';
import { procStatFields } from './proc-stat.js';

/**
 * The state folder belongs to one live process at a time. Node has no flock, so the
 * lock is a file naming its holder: pid, the process's start time (field 22 of
 * /proc/PID/stat) and the boot id. It is never stale: a holder that died (SIGKILL
 * included) is seen as dead, even when its pid was reused, and its lock is taken over.
 * Files are created whole (written aside, then hard-linked into place: link fails when
 * the name exists), so a reader never sees a half-written lock.
 */
export interface StateLock {
  readonly file: string;
  /** Removes the lock if it is still ours. Also done at process exit. */
  release(): void;
}

interface Holder {
  pid: number;
  start: string;
  boot: string;
}

const LOCK_NAME = 'lock';
const ATTEMPTS = 20;

export async function lockStateDir(dir: string): Promise<StateLock> {
  const file = join(dir, LOCK_NAME);
  const me = await currentHolder();
  const text = `${JSON.stringify(me)}\n`;
  const aside = join(dir, `${LOCK_NAME}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  await writeFile(aside, text, { mode: 0o644 });
  try {
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (await linkNew(aside, file)) return held(file, text);
      const holder = await readHolder(file);
      if (holder === 'gone') continue;
      if (holder !== 'unreadable' && (await isAlive(holder))) throw inUse(dir, holder);
      await takeOver(dir, file, holder, aside);
    }
  } finally {
    await unlink(aside).catch(() => undefined);
  }
  throw new WorkerError('CONFIG_INVALID', `could not lock the state folder ${dir}`, {
    hint: 'another process keeps changing its lock file; give each worker its own --state-dir',
  });
}

const LOCK_POLL_MS = 100;

/**
 * Node has no flock: the lock of `dir`, waited for while another live process holds it.
 * Past `deadlineMs` the holder's refusal is thrown (or what `timedOut` makes of it); a
 * `signal` that fires ends the wait as CANCELLED, saying `cancelled`.
 */
export async function waitForStateLock(
  dir: string,
  options: {
    deadlineMs?: number;
    signal?: AbortSignal;
    cancelled: string;
    timedOut?: (error: WorkerError) => WorkerError;
  },
): Promise<StateLock> {
  for (;;) {
    try {
      return await lockStateDir(dir);
    } catch (error) {
      if (!(error instanceof WorkerError)) throw error;
      if (options.deadlineMs !== undefined && Date.now() > options.deadlineMs) {
        throw options.timedOut ? options.timedOut(error) : error;
      }
      if (options.signal?.aborted) throw new WorkerError('CANCELLED', options.cancelled);
      await sleep(LOCK_POLL_MS);
    }
  }
}

/**
 * Whether a live process holds the folder's lock: `none` when there is no lock file.
 * Only a hint (the holder may die right after): take the lock to act on a dead one.
 */
export async function lockHolder(dir: string): Promise<'alive' | 'dead' | 'none'> {
  const holder = await readHolder(join(dir, LOCK_NAME)).catch(() => 'unreadable' as const);
  if (holder === 'gone') return 'none';
  if (holder === 'unreadable') return 'dead';
  return (await isAlive(holder)) ? 'alive' : 'dead';
}

/** The pid of the live process holding the folder's lock, if one does (a hint, as lockHolder). */
export async function liveHolderPid(dir: string): Promise<number | undefined> {
  const holder = await readHolder(join(dir, LOCK_NAME)).catch(() => 'unreadable' as const);
  if (holder === 'gone' || holder === 'unreadable') return undefined;
  return (await isAlive(holder)) ? holder.pid : undefined;
}

/**
 * Removes a dead holder's lock. Several processes may find the same dead holder at
 * once: a guard file named after it lets one of them remove the lock, so nobody
 * removes a lock that a live process has just taken.
 */
async function takeOver(
  dir: string,
  file: string,
  dead: Holder | 'unreadable',
  aside: string,
): Promise<void> {
  const tag = dead === 'unreadable' ? 'unreadable' : `${dead.pid}-${dead.start}`;
  const guard = join(dir, `${LOCK_NAME}.takeover-${tag}`);
  if (!(await linkNew(aside, guard))) {
    // Another process is taking it over, or died doing so (its guard is then removed).
    const other = await readHolder(guard);
    if (other === 'gone' || (other !== 'unreadable' && (await isAlive(other)))) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      return;
    }
    await unlink(guard).catch(() => undefined);
    return;
  }
  try {
    const now = await readHolder(file);
    if (now !== 'gone' && JSON.stringify(now) === JSON.stringify(dead)) {
      await unlink(file).catch(() => undefined);
    }
  } finally {
    await unlink(guard).catch(() => undefined);
  }
}

async function linkNew(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new WorkerError('CONFIG_INVALID', `cannot create the lock file ${to}`, {
      cause: error,
      detail: (error as Error).message,
      hint: 'pass --state-dir with a folder this user can write',
    });
  }
}

async function readHolder(file: string): Promise<Holder | 'gone' | 'unreadable'> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw error;
  }
  return parseHolder(text) ?? 'unreadable';
}

function parseHolder(text: string): Holder | undefined {
  try {
    const value = JSON.parse(text) as Partial<Holder>;
    if (
      Number.isInteger(value.pid) &&
      typeof value.start === 'string' &&
      typeof value.boot === 'string'
    ) {
      return { pid: value.pid as number, start: value.start, boot: value.boot };
    }
  } catch {
    // unreadable
  }
  return undefined;
}

function held(file: string, text: string): StateLock {
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off('exit', release);
    try {
      if (readFileSync(file, 'utf8') === text) unlinkSync(file);
    } catch {
      // already gone
    }
  };
  process.on('exit', release);
  return { file, release };
}

function inUse(dir: string, holder: Holder): WorkerError {
  return new WorkerError(
    'CONFIG_INVALID',
    `the state folder ${dir} is in use by another compute-worker process (pid ${holder.pid})`,
    {
      hint: 'each worker on a host needs its own --state-dir: start this one with a distinct folder, e.g. --state-dir /var/lib/compute-worker/gpu1',
    },
  );
}

async function currentHolder(): Promise<Holder> {
  return {
    pid: process.pid,
    start: (await startTime(process.pid)) ?? '',
    boot: await bootId(),
  };
}

async function bootId(): Promise<string> {
  try {
    return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  } catch {
    return '';
  }
}

/** Field 22 of /proc/PID/stat (clock ticks after boot); undefined when there is no such process. */
export async function startTime(pid: number): Promise<string | undefined> {
  const fields = await procStatFields(pid);
  return fields && (fields[19] ?? '');
}

async function isAlive(holder: Holder): Promise<boolean> {
  const me = await currentHolder();
  if (holder.boot !== me.boot) return false;
  if (me.start !== '') {
    const start = await startTime(holder.pid);
    if (start === undefined) return false;
    // Unreadable /proc (hidepid): the pid exists; count it alive rather than steal its lock.
    return start === '' || start === holder.start;
  }
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
