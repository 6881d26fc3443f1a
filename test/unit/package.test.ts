import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

// What `npm pack` puts in the package: the built worker, so that `npm i -g` of it gives a
// compute-worker that starts (prepack builds it).
describe('the npm package', { timeout: 120_000 }, () => {
  it('holds the built commands and the bin, not the sources or tests', async () => {
    const root = join(import.meta.dirname, '..', '..');
    const { stdout } = await execa('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: root,
    });
    const files = (JSON.parse(stdout) as { files: { path: string }[] }[])[0]?.files.map(
      (f) => f.path,
    );
    expect(files).toEqual(
      expect.arrayContaining([
        'bin/run.js',
        'dist/commands/run.js',
        'dist/commands/doctor.js',
        'dist/commands/task/exec.js',
        'dist/src/worker/worker.js',
        // Commands and flags known without importing every command: a fast start.
        'oclif.manifest.json',
        'package.json',
        // The documentation the README links to, the license it declares, the policy.
        'README.md',
        'LICENSE',
        'SECURITY.md',
        'docs/operating.md',
        'docs/security.md',
        // The systemd unit template and its example environment.
        'contrib/systemd/compute-worker@.service',
        'contrib/systemd/common.env.example',
      ]),
    );
    expect(files?.filter((f) => /^(src|test|commands)\//.test(f))).toEqual([]);
  });
});
