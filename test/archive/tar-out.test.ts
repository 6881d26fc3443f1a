import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline, Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  extractEntryToFile,
  type FileEntry,
  packFolderFromTar,
  readFileFromTar,
  sanitizeTar,
  tarFromFiles,
} from '../../src/archive/safe-tar.js';
import { WorkerError } from '../../src/errors.js';
import { gz, readBack, sha256, streamOf, tarOf } from './tar-fixtures.js';

const owner = { uid: 1000, gid: 1000 };

/** Gunzips with pipeline, which (unlike pipe) hands the source's error on. */
const gunzip = (stream: Readable) => pipeline(stream, createGunzip(), () => {});

async function failure(stream: AsyncIterable<unknown>): Promise<WorkerError> {
  const error = await readBack(stream).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(WorkerError);
  return error as WorkerError;
}

const summary = (entries: Awaited<ReturnType<typeof readBack>>) =>
  entries.map(({ header, data }) => ({
    name: header.name,
    type: header.type,
    mode: header.mode,
    owner: `${header.uid}:${header.gid}:${header.uname}:${header.gname}`,
    ...(header.linkname ? { linkname: header.linkname } : {}),
    ...(data.length ? { data: data.toString() } : {}),
  }));

describe('sanitizeTar', () => {
  it('rewrites owners, modes and names under a prefix, with its folders and extra folders first', async () => {
    const input = gz(
      await tarOf([
        { name: './a/b/c.txt', body: 'abc', uid: 0, gid: 0, uname: 'root', gname: 'root' },
        { name: 'run', body: 'x', mode: 0o6777 },
        { name: 'empty', body: '' },
        { name: 'a/link', type: 'symlink', linkname: 'b/c.txt' },
        { name: 'hard', type: 'link', linkname: 'a/b/c.txt' },
        { name: 'dir/', type: 'directory', mode: 0o1777 },
      ]),
    );
    const out = await readBack(
      sanitizeTar(streamOf(input, 1000), {
        gzip: true,
        ...owner,
        prefix: 'model/',
        extraDirs: ['pred'],
      }),
    );
    const own = '1000:1000::';
    expect(summary(out)).toEqual([
      { name: './', type: 'directory', mode: 0o755, owner: own },
      { name: 'model/', type: 'directory', mode: 0o755, owner: own },
      { name: 'pred/', type: 'directory', mode: 0o755, owner: own },
      { name: 'model/a/', type: 'directory', mode: 0o755, owner: own },
      { name: 'model/a/b/', type: 'directory', mode: 0o755, owner: own },
      { name: 'model/a/b/c.txt', type: 'file', mode: 0o644, owner: own, data: 'abc' },
      { name: 'model/run', type: 'file', mode: 0o755, owner: own, data: 'x' },
      { name: 'model/empty', type: 'file', mode: 0o644, owner: own },
      { name: 'model/a/link', type: 'symlink', mode: 0o777, owner: own, linkname: 'b/c.txt' },
      { name: 'model/hard', type: 'link', mode: 0o755, owner: own, linkname: 'model/a/b/c.txt' },
      { name: 'model/dir/', type: 'directory', mode: 0o755, owner: own },
    ]);
  });

  it('streams a multi-megabyte entry through unchanged', async () => {
    const big = randomBytes(12 * 1024 * 1024 + 123);
    const input = await tarOf([{ name: 'weights.bin', body: big }]);
    const out = await readBack(sanitizeTar(streamOf(input), { gzip: false, ...owner }));
    const file = out.find((entry) => entry.header.name === 'weights.bin');
    expect(file?.header.size).toBe(big.length);
    expect(sha256(file?.data ?? Buffer.alloc(0))).toBe(sha256(big));
  });

  it('emits the rejection of a hostile entry on its output', async () => {
    const input = await tarOf([
      { name: 'ok', body: 'fine' },
      { name: 'etc', type: 'symlink', linkname: '/etc' },
    ]);
    const error = await failure(
      sanitizeTar(streamOf(input), { gzip: false, ...owner, label: 'model archive' }),
    );
    expect(error.code).toBe('ARCHIVE_REJECTED');
    expect(error.message).toBe(
      "model archive entry 'etc' is a symbolic link to '/etc', which leaves the archive folder",
    );
  });

  it('emits corrupt gzip data as a rejection', async () => {
    const error = await failure(
      sanitizeTar(streamOf(Buffer.from('definitely not gzip')), { gzip: true, ...owner }),
    );
    expect(error.code).toBe('ARCHIVE_REJECTED');
    expect(error.message).toBe('archive is not valid gzip data or is cut short');
  });

  it('passes the input stream’s own error on as it is', async () => {
    const broken = new Readable({
      read() {
        this.destroy(new WorkerError('STORAGE_FAILED', 'storage went away', { retryable: true }));
      },
    });
    const error = await failure(sanitizeTar(broken, { gzip: true, ...owner }));
    expect(error.code).toBe('STORAGE_FAILED');
    expect(error.retryable).toBe(true);
  });
});

describe('tarFromFiles', () => {
  async function* files(): AsyncGenerator<FileEntry> {
    yield { name: 'pred', type: 'directory' };
    yield {
      name: 'x/y/data.csv',
      size: 5,
      stream: Readable.from([Buffer.from('a,b\n'), Buffer.from('1')]),
    };
    yield { name: 'label', size: 0, stream: Readable.from([]) };
  }

  it('writes each file as one entry with its folders, all owned by the given user', async () => {
    const out = await readBack(tarFromFiles(files(), owner));
    const own = '1000:1000::';
    expect(summary(out)).toEqual([
      { name: './', type: 'directory', mode: 0o755, owner: own },
      { name: 'pred/', type: 'directory', mode: 0o755, owner: own },
      { name: 'x/', type: 'directory', mode: 0o755, owner: own },
      { name: 'x/y/', type: 'directory', mode: 0o755, owner: own },
      { name: 'x/y/data.csv', type: 'file', mode: 0o644, owner: own, data: 'a,b\n1' },
      { name: 'label', type: 'file', mode: 0o644, owner: own },
    ]);
  });

  it.each([
    [3, 'more than 3'],
    [9, '5'],
  ])('fails when a stream gives other than the announced %i bytes', async (size, got) => {
    const error = await failure(
      tarFromFiles([{ name: 'f', size, stream: Readable.from([Buffer.from('12345')]) }], owner),
    );
    expect(error.code).toBe('STORAGE_FAILED');
    expect(error.retryable).toBe(true);
    expect(error.message).toBe(`data file 'f' gave ${got} bytes where ${size} were announced`);
  });

  it('refuses a name that leaves the volume', async () => {
    const error = await failure(
      tarFromFiles([{ name: '../f', size: 0, stream: Readable.from([]) }], owner),
    );
    expect(error.message).toBe("data entry '../f' leaves the archive folder");
  });
});

describe('packFolderFromTar', () => {
  it('keeps one folder, stripped, owned by 0:0, gzipped, and drops links that leave it', async () => {
    const exported = await tarOf([
      { name: './', type: 'directory', uid: 1000, gid: 1000 },
      { name: './model/', type: 'directory', uid: 1000, gid: 1000 },
      { name: './model/w.bin', body: 'weights', uid: 1000, gid: 1000, uname: 'u', mode: 0o775 },
      { name: './model/sub/cfg', body: 'c', uid: 1000, gid: 1000 },
      { name: './model/sub/up', type: 'symlink', linkname: '../w.bin' },
      { name: './model/out', type: 'symlink', linkname: '../other/secret' },
      { name: './model/abs', type: 'symlink', linkname: '/etc/shadow' },
      { name: './other/secret', body: 's' },
      { name: './other/pipe', type: 'fifo' },
    ]);
    const packed = packFolderFromTar(streamOf(exported), { folder: 'model' });
    const out = await readBack(gunzip(packed));
    expect(summary(out)).toEqual([
      { name: 'w.bin', type: 'file', mode: 0o755, owner: '0:0::', data: 'weights' },
      { name: 'sub/', type: 'directory', mode: 0o755, owner: '0:0::' },
      { name: 'sub/cfg', type: 'file', mode: 0o644, owner: '0:0::', data: 'c' },
      { name: 'sub/up', type: 'symlink', mode: 0o777, owner: '0:0::', linkname: '../w.bin' },
    ]);
  });

  it('rejects a FIFO inside the folder', async () => {
    const exported = await tarOf([{ name: 'model/pipe', type: 'fifo' }]);
    const error = await failure(gunzip(packFolderFromTar(streamOf(exported), { folder: 'model' })));
    expect(error.code).toBe('ARCHIVE_REJECTED');
    expect(error.message).toBe(
      "volume export entry 'model/pipe' has a type that is not allowed (fifo)",
    );
  });
});

describe('readFileFromTar and extractEntryToFile', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-tar-out-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const exported = () =>
    tarOf([
      { name: './', type: 'directory' },
      { name: './performance.json', body: '{"all":0.5}' },
      { name: './pred/', type: 'directory' },
      { name: './pred/pred_abc', body: 'x'.repeat(100_000) },
      { name: './later', body: 'y' },
    ]);

  it('reads a small file and drains the rest', async () => {
    const found = await readFileFromTar(streamOf(await exported()), 'performance.json', 1024);
    expect(found?.toString()).toBe('{"all":0.5}');
    expect(await readFileFromTar(streamOf(await exported()), 'absent.json', 1024)).toBeUndefined();
  });

  it('rejects a file larger than allowed, and a name that is not a regular file', async () => {
    const big = readFileFromTar(streamOf(await exported()), 'performance.json', 5);
    await expect(big).rejects.toThrow(
      "archive entry 'performance.json' is larger than the 5 allowed",
    );
    const folder = readFileFromTar(streamOf(await exported()), 'pred', 5);
    await expect(folder).rejects.toThrow("archive entry 'pred' is not a regular file");
  });

  it('extracts the first of several names into a file', async () => {
    const target = join(dir, 'prediction');
    const found = await extractEntryToFile(
      streamOf(await exported(), 4096),
      ['pred/abc', 'pred/pred_abc'],
      target,
    );
    expect(found).toEqual({ name: 'pred/pred_abc', size: 100_000 });
    const written = await readFile(target);
    expect(createHash('sha256').update(written).digest('hex')).toBe(
      sha256(Buffer.from('x'.repeat(100_000))),
    );
  });

  it('does not write through a symlink at the destination', async () => {
    const target = join(dir, 'prediction');
    await symlink(join(dir, 'elsewhere'), target);
    const attempt = extractEntryToFile(streamOf(await exported()), 'later', target);
    await expect(attempt).rejects.toMatchObject({
      code: 'INTERNAL',
      detail: expect.stringMatching(/^ELOOP/),
    });
  });
});
