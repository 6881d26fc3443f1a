import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { extract, type Header, pack } from 'tar-stream';

export type FixtureEntry = Partial<Header> & { name: string; body?: string | Buffer };

/** A tar built by tar-stream's own packer, which writes whatever header it is given. */
export async function tarOf(entries: FixtureEntry[]): Promise<Buffer> {
  const packer = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of packer) chunks.push(chunk as Buffer);
  })();
  for (const { body, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      const done = (error?: Error | null) => (error ? reject(error) : resolve());
      if (body === undefined) packer.entry(header, done);
      else packer.entry(header, body, done);
    });
  }
  packer.finalize();
  await collected;
  return Buffer.concat(chunks);
}

export function streamOf(data: Buffer, chunkSize = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += chunkSize) yield data.subarray(i, i + chunkSize);
    })(),
  );
}

export const gz = (data: Buffer) => gzipSync(data);

/**
 * One raw 512-byte header, for what tar-stream's packer cannot write: GNU long names ('L'),
 * pax records with any content ('x'), odd type flags.
 */
export function rawHeader(fields: {
  name: string;
  flag: string;
  size?: number;
  mode?: number;
  linkname?: string;
}): Buffer {
  const block = Buffer.alloc(512);
  block.write(fields.name, 0, 100, 'utf8');
  block.write(octal(fields.mode ?? 0o644, 7), 100);
  block.write(octal(0, 7), 108);
  block.write(octal(0, 7), 116);
  block.write(octal(fields.size ?? 0, 11), 124);
  block.write(octal(0, 11), 136);
  block.write(fields.flag, 156);
  if (fields.linkname) block.write(fields.linkname, 157, 100, 'utf8');
  block.write('ustar\u000000', 257, 'binary');
  block.fill(' ', 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${octal(sum, 6)}\u0000 `, 148, 'binary');
  return block;
}

/** Data padded to whole 512-byte blocks. */
export function blocks(data: Buffer | string): Buffer {
  const buf = Buffer.from(data);
  const padded = Buffer.alloc(Math.ceil(buf.length / 512) * 512);
  buf.copy(padded);
  return padded;
}

export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = body.length + 1;
  while (`${length}${body}`.length !== length) length += 1;
  return `${length}${body}`;
}

export const END = Buffer.alloc(1024);

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width, '0');
}

export interface ReadBack {
  header: Header;
  data: Buffer;
}

/** Reads a tar back with tar-stream, as any consumer would. */
export async function readBack(stream: AsyncIterable<unknown>): Promise<ReadBack[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  const parser = extract();
  const out: ReadBack[] = [];
  const reading = (async () => {
    for await (const entry of parser) {
      const data: Buffer[] = [];
      for await (const chunk of entry) data.push(chunk as Buffer);
      out.push({ header: entry.header, data: Buffer.concat(data) });
    }
  })();
  parser.end(Buffer.concat(chunks));
  await reading;
  return out;
}

export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A raw tar of one pax header (record `key=value`) then one file entry with `body`. */
export function paxTar(key: string, value: string, name: string, body = ''): Buffer {
  const record = paxRecord(key, value);
  return Buffer.concat([
    rawHeader({ name: `PaxHeader/${name}`, flag: 'x', size: Buffer.byteLength(record) }),
    blocks(record),
    rawHeader({ name, flag: '0', size: body.length }),
    ...(body ? [blocks(body)] : []),
    END,
  ]);
}
