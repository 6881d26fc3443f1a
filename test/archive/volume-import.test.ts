import { randomBytes } from 'node:crypto';
import { lstat, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { sanitizeTar } from '../../src/archive/safe-tar.js';
import { gz, streamOf, tarOf } from './tar-fixtures.js';

const podman = await execa('podman', ['--version'], { reject: false });
const rootful = process.getuid?.() === 0;

// What `volume import` makes of sanitizeTar's output is the point of sanitizeTar: checked with
// the real engine, on the volume's folder on the host (rootful podman only).
describe.skipIf(podman.exitCode !== 0 || !rootful)('sanitizeTar into podman volume import', () => {
  const volume = `cw-archive-test-${randomBytes(6).toString('hex')}`;
  afterAll(async () => {
    await execa('podman', ['volume', 'rm', '--force', volume], { reject: false });
  });

  it('gives every imported file and folder the container user as owner', async () => {
    await execa('podman', ['volume', 'create', volume]);
    const model = gz(
      await tarOf([
        { name: 'weights/w.bin', body: 'w', uid: 0, gid: 0, uname: 'root' },
        { name: 'train.sh', body: '#!/bin/sh\n', mode: 0o4755 },
        { name: 'latest', type: 'symlink', linkname: 'weights/w.bin' },
      ]),
    );
    const clean = sanitizeTar(streamOf(model), {
      gzip: true,
      uid: 1000,
      gid: 1000,
      prefix: 'model',
      extraDirs: ['pred'],
    });
    await execa('podman', ['volume', 'import', volume, '-'], { input: clean });
    const { stdout } = await execa('podman', [
      'volume',
      'inspect',
      volume,
      '--format',
      '{{.Mountpoint}}',
    ]);
    const root = stdout.trim();

    for (const path of [
      'model',
      'pred',
      'model/weights',
      'model/weights/w.bin',
      'model/train.sh',
      'model/latest',
    ]) {
      const stats = await lstat(join(root, path));
      expect({ path, uid: stats.uid, gid: stats.gid }).toEqual({ path, uid: 1000, gid: 1000 });
    }
    expect((await lstat(join(root, 'model/train.sh'))).mode & 0o7777).toBe(0o755);
    expect(await readlink(join(root, 'model/latest'))).toBe('weights/w.bin');
    expect(await readFile(join(root, 'model/latest'), 'utf8')).toBe('w');
  });
});
