import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

const BUSYBOX = '/bin/busybox';

export const BUSYBOX_CONTAINERFILE = [
  'FROM scratch',
  'COPY busybox /bin/busybox',
  'RUN ["/bin/busybox","--install","-s","/bin"]',
];

export interface BusyboxContextOptions {
  /** Files put at the root of the context next to busybox. */
  files?: Record<string, string | Buffer>;
  /** Lines appended to the Containerfile. */
  extraLines?: string[];
  /** Replaces the whole Containerfile. */
  containerfile?: string;
  /** Name of the build file at the root of the context. */
  containerfileName?: string;
}

/**
 * A self-contained build context (.tar.gz): no registry is reachable, so the image is
 * `FROM scratch` plus Debian's static busybox (package busybox-static).
 */
export async function busyboxContext(options: BusyboxContextOptions = {}): Promise<Buffer> {
  const containerfile =
    options.containerfile ?? [...BUSYBOX_CONTAINERFILE, ...(options.extraLines ?? [])].join('\n');
  const files: Record<string, string | Buffer> = {
    [options.containerfileName ?? 'Containerfile']: `${containerfile}\n`,
    busybox: await readFile(BUSYBOX),
    ...options.files,
  };
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
