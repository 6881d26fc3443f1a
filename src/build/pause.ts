import { readdir, readFile, readlink } from 'node:fs/promises';
import { readOwnedFile } from './owned-dirs.js';

/**
 * A rootless podman keeps its user namespace open with a pause process (`catatonit -P`)
 * and records its pid in the user's runtime folder. The calls that clean up after a failed
 * build (run once the build's cgroup, and the pause process the build made in it, are
 * gone) make new ones that nothing records or ends: one or two a failed build, for as long
 * as the host runs, until it can fork no more. A pause process that is not the recorded
 * one and whose namespace holds no other process serves nobody: these are killed. One
 * that a build of a sibling worker is still in keeps company, and is left alone.
 * Returns the pids killed.
 */
export async function reapIdlePauses(uid: number): Promise<number[]> {
  const recorded = new Set<number>();
  for (const dir of [`/run/user/${uid}`, `/tmp/podman-run-${uid}`]) {
    const text = (await readOwnedFile(`${dir}/libpod/tmp/pause.pid`, 64)) ?? '';
    if (/^\d+\s*$/.test(text)) recorded.add(Number(text));
  }
  const pauses: { pid: number; ns: string }[] = [];
  const users = new Map<string, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const ns = await readlink(`/proc/${pid}/ns/user`).catch(() => undefined);
    if (!ns) continue;
    users.set(ns, (users.get(ns) ?? 0) + 1);
    if (!recorded.has(pid) && (await isPauseOf(pid, uid))) pauses.push({ pid, ns });
  }
  const killed: number[] = [];
  for (const { pid, ns } of pauses) {
    if ((users.get(ns) ?? 0) > 1) continue;
    try {
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  return killed;
}

async function isPauseOf(pid: number, uid: number): Promise<boolean> {
  const [cmdline, status] = await Promise.all([
    readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''),
    readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''),
  ]);
  const args = cmdline.split('\0');
  if (!(args[0] ?? '').endsWith('catatonit') || args[1] !== '-P') return false;
  return new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(status);
}
