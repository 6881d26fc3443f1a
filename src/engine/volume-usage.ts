import type { Stats } from 'node:fs';
import { lstat, opendir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { duArgs, volumeMountpointArgs } from './args.js';
import type { EngineContext } from './context.js';
import { execEngine } from './exec.js';
import type { TreeUsage, WalkOptions } from './types.js';

/** The host path of a named volume, or undefined when the engine gives none. */
export async function volumeMountpoint(
  ctx: EngineContext,
  volume: string,
): Promise<string | undefined> {
  // A remote engine's folder is on its host; the same path here would be another folder.
  if (ctx.cli.engineHost) return undefined;
  const usual = await usualMountpoint(ctx, volume);
  if (usual) return usual;
  const out = await execEngine(ctx.cli, volumeMountpointArgs(volume), {
    timeoutMs: ctx.options.callTimeoutMs,
    maxStdoutBytes: 64 * 1024,
  });
  const path = out.trim();
  return path.startsWith('/') ? path : undefined;
}

/**
 * Where podman and docker keep a local volume by default, <storage>/volumes/NAME/_data: no
 * engine call when that folder is there. A worker's volume names are random, so a folder
 * of that name is this volume; elsewhere (a configured volume_path) the engine is asked.
 */
async function usualMountpoint(ctx: EngineContext, volume: string): Promise<string | undefined> {
  if (!ctx.info.graphRoot || !/^cw-vol-[0-9a-f]{16}$/.test(volume)) return undefined;
  const path = join(ctx.info.graphRoot, 'volumes', volume, '_data');
  const found = await lstat(path).catch(() => undefined);
  return found?.isDirectory() ? path : undefined;
}

/**
 * Sums the allocated size of everything under `root`, the root included, without following
 * links and without leaving the root's filesystem (a mount inside a volume is not its data).
 * Throws when the root does not exist (a remote engine's path, or the volume is gone).
 */
export async function measureTree(root: string, options: WalkOptions): Promise<TreeUsage> {
  const top = await lstat(root, { bigint: false });
  const usage: TreeUsage = { bytes: top.blocks * 512, entries: 1, unreadable: 0, truncated: false };
  const full = () =>
    usage.entries >= options.maxEntries ||
    (options.stopAtBytes !== undefined && usage.bytes > options.stopAtBytes);
  const folders = [root];
  while (folders.length > 0 && !full()) {
    const folder = folders.pop() as string;
    let dir: Awaited<ReturnType<typeof opendir>>;
    try {
      dir = await opendir(folder, { bufferSize: 256 });
    } catch {
      usage.unreadable++;
      continue;
    }
    try {
      for await (const entry of dir) {
        const path = join(folder, entry.name);
        let info: Awaited<ReturnType<typeof lstat>>;
        try {
          info = await lstat(path);
        } catch {
          continue; // removed meanwhile
        }
        usage.entries++;
        const isDir = info.isDirectory();
        if (isDir && info.dev === top.dev) folders.push(path);
        if (options.sameAs && (await unchanged(info, join(options.sameAs, relative(root, path))))) {
          continue;
        }
        const allocated = info.blocks * 512;
        const counted =
          options.wholeFiles && info.isFile() ? Math.max(allocated, info.size) : allocated;
        usage.bytes += Math.max(counted, options.minEntryBytes ?? 0);
        if (full()) break;
      }
    } catch {
      usage.unreadable++; // the folder went away while it was read
    }
  }
  usage.truncated = usage.entries >= options.maxEntries;
  return usage;
}

/** Whether `other` is the same entry as `info` by what a layer's diff compares. */
async function unchanged(info: Stats, other: string): Promise<boolean> {
  const was = await lstat(other).catch(() => undefined);
  if (!was) return false;
  const sameType =
    was.isDirectory() === info.isDirectory() &&
    was.isFile() === info.isFile() &&
    was.isSymbolicLink() === info.isSymbolicLink();
  return (
    sameType &&
    was.mode === info.mode &&
    was.uid === info.uid &&
    was.gid === info.gid &&
    (info.isDirectory() || (was.size === info.size && was.mtimeMs === info.mtimeMs))
  );
}

/**
 * Allocated bytes under `path` as seen from rootless podman's user namespace, where the
 * container's users own their files: a folder a submission made private (mode 0700) is
 * unreadable to the worker's own user outside it.
 */
export async function measureInUserNamespace(ctx: EngineContext, path: string): Promise<number> {
  const out = await execEngine(ctx.cli, duArgs(path), {
    timeoutMs: ctx.options.callTimeoutMs,
    maxStdoutBytes: 64 * 1024,
  });
  const bytes = Number.parseInt(out.trim().split(/\s/)[0] ?? '', 10);
  if (!Number.isFinite(bytes)) throw new Error(`du gave no size: ${out.slice(0, 200)}`);
  return bytes;
}

/**
 * What a volume's host folder holds. Rootless podman's worker user cannot read what a
 * container made private, so there the count is taken again inside its user namespace.
 */
export async function measureVolume(
  ctx: EngineContext,
  path: string,
  options: WalkOptions,
): Promise<TreeUsage> {
  const usage = await measureTree(path, options);
  if (usage.unreadable === 0 || usage.truncated) return usage;
  if (ctx.info.name !== 'podman' || !ctx.info.rootless || process.getuid?.() === 0) return usage;
  const bytes = await measureInUserNamespace(ctx, path);
  return { ...usage, bytes: Math.max(bytes, usage.bytes), unreadable: 0 };
}
