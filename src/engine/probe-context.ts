import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

/**
 * A Containerfile that needs no registry: a static busybox is the whole image. An untrusted
 * build's root is not the host's, and a `/` that no layer gave it stays the host root's:
 * the folders runc mounts onto (/proc, /dev, ...) are copied in from the context first.
 */
export const BUSYBOX_CONTAINERFILE = [
  'FROM scratch',
  'COPY skeleton/ /',
  'COPY busybox /bin/busybox',
  'RUN ["/bin/busybox","--install","-s","/bin"]',
  // COPY does not keep the sticky bit, and a tmpfs mounted on /tmp takes the folder's mode.
  'RUN ["/bin/busybox","chmod","1777","/tmp","/var/tmp"]',
];

/** The folders BUSYBOX_CONTAINERFILE copies to `/` (a name ending in `/` is a folder). */
export const BUSYBOX_SKELETON: Record<string, string> = Object.fromEntries(
  ['proc', 'sys', 'dev', 'etc', 'run', 'tmp', 'var/tmp'].map((dir) => [`skeleton/${dir}/`, '']),
);

/** A .tar.gz build context of these files at its root (busybox is made executable). */
export async function contextTarGz(files: Record<string, string | Buffer>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) {
    if (name.endsWith('/')) {
      pack.entry({ name, type: 'directory', mode: 0o755, mtime: new Date(0) });
      continue;
    }
    const body = typeof content === 'string' ? Buffer.from(content) : content;
    const mode = name === 'busybox' ? 0o755 : 0o644;
    pack.entry({ name, size: body.length, mode, mtime: new Date(0) }, body);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

/** The probe image's context: busybox alone, the same bytes every time, so built once. */
export function probeContext(busybox: Buffer): Promise<Buffer> {
  return contextTarGz({
    Containerfile: `${BUSYBOX_CONTAINERFILE.join('\n')}\n`,
    busybox,
    ...BUSYBOX_SKELETON,
  });
}
