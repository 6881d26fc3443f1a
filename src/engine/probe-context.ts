import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

/** A Containerfile that needs no registry: a static busybox is the whole image. */
export const BUSYBOX_CONTAINERFILE = [
  'FROM scratch',
  'COPY busybox /bin/busybox',
  'RUN ["/bin/busybox","--install","-s","/bin"]',
];

/** A .tar.gz build context of these files at its root (busybox is made executable). */
export async function contextTarGz(files: Record<string, string | Buffer>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) {
    const body = typeof content === 'string' ? Buffer.from(content) : content;
    const mode = name === 'busybox' ? 0o755 : 0o644;
    pack.entry({ name, size: body.length, mode, mtime: new Date(0) }, body);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return gzipSync(Buffer.concat(chunks));
}
