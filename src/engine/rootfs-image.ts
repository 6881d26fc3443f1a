import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import type { EngineContext } from './context.js';
import { execEngine } from './exec.js';
import { imageExists } from './images.js';

export interface RootfsEntry {
  name: string;
  type: 'directory' | 'file';
  mode: number;
  content?: Buffer;
}

/**
 * Makes a tiny local image from a handful of files with `import` (no registry is needed),
 * named by the hash of its files so it is made once per engine.
 */
export async function ensureRootfsImage(
  ctx: EngineContext,
  role: string,
  entries: readonly RootfsEntry[],
): Promise<string> {
  const hash = createHash('sha256');
  for (const e of entries) hash.update(`${e.type}:${e.name}:${e.mode}:`).update(e.content ?? '');
  const image = `localhost/compute-worker/${role}:${hash.digest('hex').slice(0, 32)}`;
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  if (await imageExists(ctx, image, call)) return image;
  await execEngine(ctx.cli, ['import', '-', image], {
    ...call,
    input: Readable.from(await packRootfs(entries)),
  });
  ctx.knownImages?.add(image);
  return image;
}

async function packRootfs(entries: readonly RootfsEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    const header = { name: e.name, type: e.type, mode: e.mode, uid: 0, gid: 0, mtime: new Date(0) };
    if (e.type === 'file')
      pack.entry({ ...header, size: e.content?.length ?? 0 }, e.content ?? Buffer.alloc(0));
    else pack.entry(header);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
