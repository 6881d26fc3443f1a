import { readFile } from 'node:fs/promises';

/**
 * The fields of /proc/PID/stat after the command name, so that index 0 is field 3 (state),
 * 1 the parent pid, 19 the start time. Undefined when there is no such process; empty
 * when it cannot be read (hidepid).
 */
export async function procStatFields(pid: number | string): Promise<string[] | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return [];
  }
  // The command name (field 2) is in parentheses and may hold spaces or ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}
