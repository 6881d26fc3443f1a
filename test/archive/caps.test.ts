import { PassThrough, Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { type NotPlain, SizeBudget, sanitizeTar } from '../../src/archive/safe-tar.js';
import { WorkerError } from '../../src/errors.js';
import { rawHeader, streamOf, tarOf } from './tar-fixtures.js';

// Caps a person sets (--max-prediction-size, --max-model-size) and the "regular files and
// folders only" rule, at the archive layer: the errors are the caller's, named as it chose.

const MIB = 1024 ** 2;

async function drain(stream: Readable): Promise<number> {
  let bytes = 0;
  for await (const chunk of stream) bytes += (chunk as Buffer).length;
  return bytes;
}

const budget = (maxBytes: number) =>
  new SizeBudget(maxBytes, (at) => new WorkerError('OUTPUT_INVALID', `over the cap at ${at}`));

const plainOnly = (entry: NotPlain) =>
  new WorkerError('OUTPUT_INVALID', `${entry.name} is ${entry.kind} to ${entry.linkname ?? '-'}`);

const owner = { uid: 1000, gid: 1000 };

describe('regular files and folders only', () => {
  it.each([
    { type: 'symlink' as const, linkname: '/hidden_data/test/x', kind: 'a symbolic link' },
    { type: 'fifo' as const, kind: 'a FIFO' },
    { type: 'character-device' as const, kind: 'a character device' },
    { type: 'block-device' as const, kind: 'a block device' },
  ])('refuses $kind, naming it', async ({ type, linkname, kind }) => {
    const tar = await tarOf([
      { name: 'ok', body: 'label\n' },
      { name: 'sub/p', type, ...(linkname ? { linkname } : {}) },
    ]);
    const out = sanitizeTar(streamOf(tar), { gzip: false, ...owner, plainOnly });
    await expect(drain(out)).rejects.toThrow(`sub/p is ${kind} to ${linkname ?? '-'}`);
  });

  it('refuses a hard link, even to a file of the archive', async () => {
    const tar = await tarOf([
      { name: 'a', body: 'x' },
      { name: 'b', type: 'link', linkname: 'a' },
    ]);
    const out = sanitizeTar(streamOf(tar), { gzip: false, ...owner, plainOnly });
    await expect(drain(out)).rejects.toThrow('b is a hard link to a');
  });

  it('passes files and folders', async () => {
    const tar = await tarOf([
      { name: 'd', type: 'directory' },
      { name: 'd/p', body: 'label\n' },
    ]);
    const out = sanitizeTar(streamOf(tar), { gzip: false, ...owner, plainOnly });
    expect(await drain(out)).toBeGreaterThan(0);
  });
});

describe('a size budget', () => {
  it('fails an entry whose declared size cannot fit at its header, before its data comes', async () => {
    // A header announcing 1 GiB, then a stream that never ends: only a header check returns.
    const input = new PassThrough();
    input.write(rawHeader({ name: 'weights', flag: '0', size: 1024 ** 3 }));
    const out = sanitizeTar(input, { gzip: false, ...owner, budget: budget(64 * MIB) });
    await expect(drain(out)).rejects.toThrow('over the cap at weights');
  });

  it('stops a gzip bomb once the unpacked bytes pass it', async () => {
    // 1 GiB of zeros as 1024 gzip members: no entry at all, only the raw count stops it.
    const member = gzipSync(Buffer.alloc(MIB));
    const bomb = Readable.from(
      (function* () {
        for (let i = 0; i < 1024; i += 1) yield member;
      })(),
    );
    const cap = budget(8 * MIB);
    const out = sanitizeTar(bomb, { gzip: true, ...owner, budget: cap });
    await expect(drain(out)).rejects.toThrow('over the cap');
    expect(cap.used).toBeLessThan(9 * MIB);
  });

  it('is shared: two archives together may not pass it', async () => {
    const shared = budget(3 * MIB);
    const file = (name: string) => tarOf([{ name, body: Buffer.alloc(2 * MIB) }]);
    await drain(sanitizeTar(streamOf(await file('a')), { gzip: false, ...owner, budget: shared }));
    const second = sanitizeTar(streamOf(await file('b')), {
      gzip: false,
      ...owner,
      budget: shared,
    });
    await expect(drain(second)).rejects.toThrow('over the cap at b');
  });
});
