import { readdir, readFile } from 'node:fs/promises';

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
