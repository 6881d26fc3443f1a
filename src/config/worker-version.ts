import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The worker's own version, from its package.json: found by walking up from this file,
 * which is one folder deeper when built (dist/src/config) than in the sources.
 */
export function workerVersion(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'compute-worker' && pkg.version) {
        cached = pkg.version;
        return cached;
      }
    } catch {
      // not here: one folder up
    }
    dir = dirname(dir);
  }
  cached = 'unknown';
  return cached;
}
