import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lockHolder, lockStateDir, startTime } from '../../src/config/state-lock.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cw-state-lock-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const bootId = async () => (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();

/** A lock file as a process with this pid and start time would have left it. */
async function forgeLock(pid: number, start: string, boot?: string) {
  const holder = { pid, start, boot: boot ?? (await bootId()) };
  await writeFile(join(dir, 'lock'), `${JSON.stringify(holder)}\n`);
}

/** A `sleep` process; `kill()` ends it with SIGKILL and waits. */
async function sleeper() {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('spawn', resolve));
  const pid = child.pid as number;
  const start = (await startTime(pid)) as string;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    pid,
    start,
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('lockStateDir', () => {
  it('holds the folder: a second lock is refused, naming --state-dir; release frees it', async () => {
    const lock = await lockStateDir(dir);
    const holder = JSON.parse(await readFile(lock.file, 'utf8'));
    expect(holder.pid).toBe(process.pid);
    expect(holder.start).toBe(await startTime(process.pid));
    await expect(lockStateDir(dir)).rejects.toThrow(
      `the state folder ${dir} is in use by another compute-worker process (pid ${process.pid})`,
    );
    await expect(lockStateDir(dir)).rejects.toMatchObject({
      hint: expect.stringContaining('--state-dir'),
    });
    lock.release();
    expect(await readdir(dir)).toEqual([]);
    const again = await lockStateDir(dir);
    again.release();
  });

  it('refuses while the holder lives, takes the lock over once it was killed', async () => {
    const other = await sleeper();
    await forgeLock(other.pid, other.start);
    await expect(lockStateDir(dir)).rejects.toThrow(`(pid ${other.pid})`);
    await other.kill();
    const lock = await lockStateDir(dir);
    expect(JSON.parse(await readFile(lock.file, 'utf8')).pid).toBe(process.pid);
    lock.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it('a reused pid (another start time) or another boot is a dead holder', async () => {
    const other = await sleeper();
    try {
      await forgeLock(other.pid, `${other.start}1`);
      (await lockStateDir(dir)).release();
      await forgeLock(other.pid, other.start, 'another-boot');
      (await lockStateDir(dir)).release();
      await writeFile(join(dir, 'lock'), 'garbage');
      (await lockStateDir(dir)).release();
    } finally {
      await other.kill();
    }
  });

  it('of many processes taking over one dead lock at once, exactly one gets it', async () => {
    const other = await sleeper();
    await other.kill();
    await forgeLock(other.pid, other.start);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => lockStateDir(dir)));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') expect(String(r.reason)).toContain('is in use');
    }
    (won[0] as PromiseFulfilledResult<{ release(): void }>).value.release();
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('lockHolder', () => {
  it('tells a live holder from a killed one, and a folder without a lock', async () => {
    expect(await lockHolder(dir)).toBe('none');
    const other = await sleeper();
    await forgeLock(other.pid, other.start);
    expect(await lockHolder(dir)).toBe('alive');
    await other.kill();
    expect(await lockHolder(dir)).toBe('dead');
    await writeFile(join(dir, 'lock'), 'not json\n');
    expect(await lockHolder(dir)).toBe('dead');
  });
});
