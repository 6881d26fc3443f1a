import { lstat, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractTarToDir } from '../../src/archive/safe-tar.js';
import { WorkerError } from '../../src/errors.js';
import {
  blocks,
  END,
  type FixtureEntry,
  gz,
  paxTar,
  rawHeader,
  streamOf,
  tarOf,
} from './tar-fixtures.js';

let root: string;
let dir: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'cw-extract-'));
  dir = join(root, 'out');
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function extractEntries(entries: FixtureEntry[], limits = {}) {
  return extractTarToDir(streamOf(await tarOf(entries)), dir, {
    gzip: false,
    limits,
    label: 'model archive',
  });
}

async function rejection(promise: Promise<unknown>): Promise<WorkerError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(WorkerError);
  const workerError = error as WorkerError;
  expect(workerError.code).toBe('ARCHIVE_REJECTED');
  expect(workerError.retryable).toBe(false);
  return workerError;
}

/** Everything under the root folder (the extraction folder's parent included), relative. */
async function filesUnder(folder: string): Promise<string[]> {
  return (await readdir(folder, { recursive: true })).sort();
}

describe('extractTarToDir accepts', () => {
  it('files, nested folders, an empty file, links inside, and keeps only the executable bit', async () => {
    const result = await extractEntries([
      { name: 'src/', type: 'directory' },
      { name: 'src/lib/deep/a.txt', body: 'hello' },
      { name: 'empty', body: '' },
      { name: './run.sh', body: '#!/bin/sh\n', mode: 0o4775 },
      { name: 'src/link', type: 'symlink', linkname: 'lib/deep/a.txt' },
      { name: 'src/lib/up', type: 'symlink', linkname: '../../empty' },
      { name: 'hard', type: 'link', linkname: 'src/lib/deep/a.txt' },
    ]);
    expect(result).toEqual({ entries: 7, bytes: 15 });
    expect(await readFile(join(dir, 'src/lib/deep/a.txt'), 'utf8')).toBe('hello');
    expect((await stat(join(dir, 'empty'))).size).toBe(0);
    expect((await stat(join(dir, 'run.sh'))).mode & 0o7777).toBe(0o755);
    expect((await stat(join(dir, 'src/lib/deep/a.txt'))).mode & 0o7777).toBe(0o644);
    expect(await readlink(join(dir, 'src/link'))).toBe('lib/deep/a.txt');
    expect(await readFile(join(dir, 'src/link'), 'utf8')).toBe('hello');
    expect((await stat(join(dir, 'hard'))).ino).toBe(
      (await stat(join(dir, 'src/lib/deep/a.txt'))).ino,
    );
  });

  it('a gzipped archive', async () => {
    const data = gz(await tarOf([{ name: 'a/b.txt', body: 'x'.repeat(1000) }]));
    const result = await extractTarToDir(streamOf(data, 100), dir, { gzip: true });
    expect(result.bytes).toBe(1000);
    expect(await readFile(join(dir, 'a/b.txt'), 'utf8')).toBe('x'.repeat(1000));
  });

  it('long names from pax and GNU headers within the limit', async () => {
    const paxName = `${'p'.repeat(150)}/${'q'.repeat(150)}.txt`;
    const gnuName = `g/${'n'.repeat(200)}`;
    const tar = Buffer.concat([
      await tarOf([{ name: paxName, body: 'pax' }]).then((b) => b.subarray(0, b.length - 1024)),
      rawHeader({ name: '././@LongLink', flag: 'L', size: gnuName.length + 1 }),
      blocks(`${gnuName}\0`),
      rawHeader({ name: 'short', flag: '0', size: 3 }),
      blocks('gnu'),
      END,
    ]);
    await extractTarToDir(streamOf(tar), dir, { gzip: false });
    expect(await readFile(join(dir, paxName), 'utf8')).toBe('pax');
    expect(await readFile(join(dir, gnuName), 'utf8')).toBe('gnu');
  });
});

describe('extractTarToDir rejects', () => {
  it.each([
    ['../etc/passwd', 'leaves the archive folder'],
    ['a/../../x', 'leaves the archive folder'],
    ['/etc/passwd', 'has an absolute name'],
  ])("the name '%s'", async (name, rule) => {
    const error = await rejection(extractEntries([{ name, body: 'x' }]));
    expect(error.message).toBe(`model archive entry '${name}' ${rule}`);
    expect(await filesUnder(root)).toEqual(['out']);
  });

  it('a pax path override that leaves the folder, though the plain header name is harmless', async () => {
    const tar = paxTar('path', '../x', 'harmless', 'evil');
    const error = await rejection(extractTarToDir(streamOf(tar), dir, { gzip: false }));
    expect(error.message).toBe("archive entry '../x' leaves the archive folder");
    expect(await filesUnder(root)).toEqual(['out']);
  });

  it('a NUL in a pax path', async () => {
    const tar = paxTar('path', 'a\0b', 'a');
    const error = await rejection(extractTarToDir(streamOf(tar), dir, { gzip: false }));
    expect(error.message).toBe("archive entry 'a\\u0000b' has a NUL character in its name");
  });

  it('a symlink to /etc, before a file could be written through it', async () => {
    const error = await rejection(
      extractEntries([
        { name: 'etc', type: 'symlink', linkname: '/etc' },
        { name: 'etc/cron.d/evil', body: 'x' },
      ]),
    );
    expect(error.message).toBe(
      "model archive entry 'etc' is a symbolic link to '/etc', which leaves the archive folder",
    );
  });

  it('a file written through an earlier symlink that points inside', async () => {
    const error = await rejection(
      extractEntries([
        { name: 'real/', type: 'directory' },
        { name: 'alias', type: 'symlink', linkname: 'real' },
        { name: 'alias/file', body: 'x' },
      ]),
    );
    expect(error.message).toBe(
      "model archive entry 'alias/file' is written through the symbolic link 'alias'",
    );
    expect((await lstat(join(dir, 'alias'))).isSymbolicLink()).toBe(true);
    expect(await readdir(join(dir, 'real'))).toEqual([]);
  });

  it.each([
    ['../outside', 'leaves'],
    ['sub/../../x', 'leaves'],
    ['d/../../../x', 'leaves'],
  ])("a symlink to '%s'", async (target) => {
    const error = await rejection(
      extractEntries([{ name: 'link', type: 'symlink', linkname: target }]),
    );
    expect(error.message).toContain('which leaves the archive folder');
  });

  it('a symlink whose target goes through another link before climbing', async () => {
    // x/d -> .. is inside, but x/d/../y would be resolved by the kernel from the root's parent
    const error = await rejection(
      extractEntries([
        { name: 'x/d', type: 'symlink', linkname: '..' },
        { name: 'esc', type: 'symlink', linkname: 'x/d/../y' },
      ]),
    );
    expect(error.message).toContain("entry 'esc' is a symbolic link to 'x/d/../y'");
  });

  it.each([['/etc/passwd'], ['../x'], ['not-yet-there']])("a hard link to '%s'", async (target) => {
    const error = await rejection(extractEntries([{ name: 'h', type: 'link', linkname: target }]));
    expect(error.message).toContain("entry 'h' is a hard link to");
    expect(error.message).toContain('which is not a regular file earlier in the archive');
  });

  it.each([
    ['character-device', 'character-device'],
    ['block-device', 'block-device'],
    ['fifo', 'fifo'],
  ] as const)('a %s', async (type, shown) => {
    const error = await rejection(
      extractEntries([{ name: 'dev', type, devmajor: 1, devminor: 3 }]),
    );
    expect(error.message).toBe(
      `model archive entry 'dev' has a type that is not allowed (${shown})`,
    );
    expect(await filesUnder(root)).toEqual(['out']);
  });

  it('an unknown entry type', async () => {
    const tar = Buffer.concat([rawHeader({ name: 'sparse', flag: 'S', size: 0 }), END]);
    const error = await rejection(extractTarToDir(streamOf(tar), dir, { gzip: false }));
    expect(error.message).toBe("archive entry 'sparse' has a type that is not allowed (unknown)");
  });

  it('more entries than allowed, stopping at the first one over', async () => {
    const entries = Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, body: 'x' }));
    const error = await rejection(extractEntries(entries, { maxEntries: 3 }));
    expect(error.message).toBe('model archive has more than 3 entries');
    expect(await readdir(dir)).toEqual(['f0', 'f1', 'f2']);
  });

  it('more bytes in total than allowed', async () => {
    const entries = Array.from({ length: 4 }, (_, i) => ({ name: `f${i}`, body: 'x'.repeat(400) }));
    const error = await rejection(extractEntries(entries, { maxTotalBytes: 1000 }));
    expect(error.message).toBe("model archive holds more than the 1000 allowed (at entry 'f2')");
  });

  it('a file claiming a huge size, before reading its data', async () => {
    const tar = Buffer.concat([
      rawHeader({ name: 'big', flag: '0', size: 8 ** 11 - 1 }),
      blocks('tiny'),
    ]);
    const error = await rejection(
      extractTarToDir(streamOf(tar), dir, { gzip: false, limits: { maxEntryBytes: 1024 ** 3 } }),
    );
    expect(error.message).toBe("archive entry 'big' is larger than the 1g allowed per entry");
    expect(await filesUnder(root)).toEqual(['out']);
  });

  it('a name deeper or longer than allowed', async () => {
    const deep = await rejection(extractEntries([{ name: 'a/b/c/d', body: '' }], { maxDepth: 3 }));
    expect(deep.message).toBe("model archive entry 'a/b/c/d' is nested deeper than 3 folders");
    const long = `${'l'.repeat(300)}/${'m'.repeat(300)}`;
    const error = await rejection(
      extractEntries([{ name: long, body: '' }], { maxPathLength: 500 }),
    );
    expect(error.message).toContain('has a name longer than 500 characters');
  });

  it('a GNU long name beyond the path limit', async () => {
    const name = 'n'.repeat(5000);
    const tar = Buffer.concat([
      rawHeader({ name: '././@LongLink', flag: 'L', size: name.length + 1 }),
      blocks(`${name}\0`),
      rawHeader({ name: 'short', flag: '0', size: 0 }),
      END,
    ]);
    const error = await rejection(extractTarToDir(streamOf(tar), dir, { gzip: false }));
    expect(error.message).toMatch(/^archive entry 'n{200}\.\.\.' has a name longer than 4096/);
  });

  it('a pax header larger than tar-stream buffers', async () => {
    const tar = paxTar('comment', 'c'.repeat(5 * 1024 * 1024), 'a');
    const error = await rejection(extractTarToDir(streamOf(tar), dir, { gzip: false }));
    expect(error.message).toBe('archive has a pax or long-name header larger than 4m');
  });

  it('a duplicate name', async () => {
    const error = await rejection(
      extractEntries([
        { name: 'a', body: '1' },
        { name: 'a', body: '2' },
      ]),
    );
    expect(error.message).toBe(
      "model archive entry 'a' appears twice in the archive or replaces an earlier entry",
    );
  });

  it('corrupt gzip data', async () => {
    const data = gz(await tarOf([{ name: 'a', body: 'x'.repeat(10_000) }]));
    data.fill(0x55, 20, 40);
    const error = await rejection(extractTarToDir(streamOf(data), dir, { gzip: true }));
    expect(error.message).toBe('archive is not valid gzip data or is cut short');
  });

  it('gzip data cut short', async () => {
    const data = gz(await tarOf([{ name: 'a', body: 'x'.repeat(10_000) }]));
    const error = await rejection(
      extractTarToDir(streamOf(data.subarray(0, data.length - 10)), dir, { gzip: true }),
    );
    expect(error.message).toBe('archive is not valid gzip data or is cut short');
  });

  it('a tar truncated in the middle of an entry', async () => {
    const tar = await tarOf([{ name: 'a', body: 'x'.repeat(10_000) }]);
    const error = await rejection(
      extractTarToDir(streamOf(tar.subarray(0, 4096)), dir, { gzip: false }),
    );
    expect(error.message).toBe('archive ends in the middle of an entry: the tar data is truncated');
  });

  it('data that is not a tar at all', async () => {
    const error = await rejection(
      extractTarToDir(streamOf(Buffer.alloc(2048, 'z')), dir, { gzip: false }),
    );
    expect(error.message).toBe('archive is not a valid tar archive');
    expect(error.detail).toContain('Invalid tar header');
  });
});

describe('extractTarToDir on disk', () => {
  it('refuses to write through a symlink already in the folder', async () => {
    const { symlink, mkdir } = await import('node:fs/promises');
    await mkdir(dir);
    await mkdir(join(root, 'elsewhere'));
    await symlink(join(root, 'elsewhere'), join(dir, 'sub'));
    const error = await rejection(extractEntries([{ name: 'sub/file', body: 'x' }]));
    expect(error.message).toBe(
      "model archive entry 'sub' needs a folder where something else already is on disk",
    );
    expect(await readdir(join(root, 'elsewhere'))).toEqual([]);
  });
});

describe('extractTarToDir bounds the raw stream', () => {
  it('stops a gzip bomb of zero blocks that holds no entries', async () => {
    const bomb = gz(Buffer.alloc(40 * 1024 ** 2));
    const limits = { maxEntries: 10, maxTotalBytes: 1024, maxPathLength: 256 };
    const error = await rejection(extractTarToDir(streamOf(bomb), dir, { gzip: true, limits }));
    expect(error.message).toMatch(/^archive is longer than its entries can explain/);
  });
});
