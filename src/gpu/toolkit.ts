import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { execa } from 'execa';
import { versionBelow } from '../config/version.js';

/**
 * NVIDIA Container Toolkit releases that fixed container escapes. The floor is the newest
 * `fixedIn`: raise it by adding a row.
 */
export const TOOLKIT_FIXES: Array<{ fixedIn: string; cve: string }> = [
  { fixedIn: '1.16.2', cve: 'CVE-2024-0132' },
  { fixedIn: '1.17.8', cve: 'CVE-2025-23266' },
];

/** The CVEs a toolkit version is still open to, oldest fix first. */
export function toolkitOpenCves(version: string): string[] {
  return TOOLKIT_FIXES.filter((row) => versionBelow(version, row.fixedIn)).map((r) => r.cve);
}

export function toolkitFloor(): string {
  return TOOLKIT_FIXES.map((r) => r.fixedIn).reduce((a, b) => (versionBelow(a, b) ? b : a));
}

/** `nvidia-ctk --version`, or undefined when it is not installed. */
export async function toolkitVersion(command = 'nvidia-ctk'): Promise<string | undefined> {
  const result = await execa(command, ['--version'], {
    reject: false,
    timeout: 10_000,
    stdin: 'ignore',
  });
  if (result.failed) return undefined;
  return /version\s+v?(\d+\.\d+\.\d+)/i.exec(String(result.stdout))?.[1];
}

/** Whether a program is on PATH (docker's legacy GPU path needs the toolkit's hook). */
export async function onPath(command: string, path = process.env.PATH ?? ''): Promise<boolean> {
  for (const dir of path.split(delimiter).filter(Boolean)) {
    try {
      await access(join(dir, command), constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}
