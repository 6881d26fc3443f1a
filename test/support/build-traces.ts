import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BUILD_CGROUP_ROOT } from '../../src/build/cgroup.js';

/**
 * Processes whose command line holds the marker: a RUN step's shell carries the marker of
 * its test case in a comment, so what a build left running is found by it.
 */
export async function processesWith(marker: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(marker)) found.push(Number(entry));
  }
  return found;
}

/**
 * The worker's build cgroups (named by build id) whose id matches: at the root of cgroup
 * v2, and under every v1 hierarchy.
 */
export async function buildCgroupsWhere(match: (id: string) => boolean): Promise<string[]> {
  const found: string[] = [];
  const hierarchies = await readdir('/sys/fs/cgroup').catch(() => [] as string[]);
  for (const root of ['', ...hierarchies]) {
    const dir = join('/sys/fs/cgroup', root, BUILD_CGROUP_ROOT);
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (entry.isDirectory() && match(entry.name)) found.push(join(dir, entry.name));
    }
  }
  return found;
}
