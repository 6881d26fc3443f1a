import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import {
  BUSYBOX_CONTAINERFILE,
  BUSYBOX_SKELETON,
  contextTarGz,
} from '../../src/engine/probe-context.js';
import type { Engine } from '../../src/engine/types.js';

export { BUSYBOX_CONTAINERFILE };

export interface BusyboxContextOptions {
  /** Files put at the root of the context next to busybox. */
  files?: Record<string, string | Buffer>;
  /** Lines appended to the Containerfile. */
  extraLines?: string[];
  /** Name of the build file at the root of the context. */
  containerfileName?: string;
}

/**
 * A self-contained build context (.tar.gz): no registry is reachable, so the image is
 * `FROM scratch` plus Debian's static busybox (package busybox-static).
 */
export async function busyboxContext(options: BusyboxContextOptions = {}): Promise<Buffer> {
  const containerfile = [...BUSYBOX_CONTAINERFILE, ...(options.extraLines ?? [])].join('\n');
  return contextTarGz({
    [options.containerfileName ?? 'Containerfile']: `${containerfile}\n`,
    busybox: await readFile('/bin/busybox'),
    ...BUSYBOX_SKELETON,
    ...options.files,
  });
}

/** Builds (or finds) the plain busybox image under `role`, labelled for the test's cleanup. */
export async function busyboxImage(
  engine: Pick<Engine, 'buildImage'>,
  labels: Record<string, string>,
  role = 'conformance',
): Promise<string> {
  const context = Readable.from([await busyboxContext()]);
  return (await engine.buildImage({ role, context, labels })).image;
}
