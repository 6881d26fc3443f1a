import { Readable } from 'node:stream';
import tar from 'tar-stream';

export interface TarFile {
  name: string;
  content?: Buffer | string;
  /** A folder when content is undefined. */
  uid?: number;
  gid?: number;
}

/** An uncompressed tar of files and folders, owned as given (volume import keeps owners). */
export async function tarOf(entries: readonly TarFile[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    const owner = { uid: e.uid ?? 0, gid: e.gid ?? 0, mtime: new Date(0) };
    if (e.content === undefined) {
      pack.entry({ ...owner, name: e.name, type: 'directory', mode: 0o755 });
    } else {
      const body = typeof e.content === 'string' ? Buffer.from(e.content) : e.content;
      pack.entry({ ...owner, name: e.name, size: body.length, mode: 0o644 }, body);
    }
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The regular files of a tar stream by name (leading "./" removed). */
export async function filesOfTar(stream: Readable): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, body, next) => {
      const chunks: Buffer[] = [];
      body.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
      body.on('end', () => {
        if (header.type === 'file')
          files.set(header.name.replace(/^\.\//, ''), Buffer.concat(chunks));
        next();
      });
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
    stream.on('error', reject);
  });
  stream.pipe(extract);
  await done;
  return files;
}

export const readableOf = (buffer: Buffer) => Readable.from([buffer]);
