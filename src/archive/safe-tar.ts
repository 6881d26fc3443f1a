/**
 * Checked tar and tar.gz in and out. Archives from storage and volume exports are untrusted:
 * tar-stream only parses, so every rule (names, link targets, entry types, sizes, counts) is
 * enforced here, after pax and GNU long-name overrides, while streaming and before any data is
 * kept. Violations are ARCHIVE_REJECTED WorkerErrors naming the entry and the rule.
 */
import type { Readable } from 'node:stream';
import { WorkerError } from '../errors.js';
import {
  archiveRejected,
  type CheckedHeader,
  EntryPolicy,
  type NotPlain,
  nameParts,
  resolveLimits,
  type SizeBudget,
  showName,
  type TarLimits,
} from './tar-policy.js';
import { readTarEntries } from './tar-reader.js';
import { requireFile, tooLarge, wantedNames } from './tar-to-disk.js';
import { type Owner, type TarWriter, writeTar } from './tar-writer.js';

export {
  DEFAULT_TAR_LIMITS,
  describeEntryType,
  type NotPlain,
  SizeBudget,
  type TarLimits,
} from './tar-policy.js';
export { extractEntryToFile, extractTarToDir } from './tar-to-disk.js';

export interface SanitizeOptions extends Owner {
  gzip: boolean;
  /** Folder every entry is put under, e.g. 'model/'. */
  prefix?: string;
  limits?: Partial<TarLimits>;
  /** Empty folders added at the top, e.g. ['pred']. */
  extraDirs?: string[];
  label?: string;
  budget?: SizeBudget;
  plainOnly?: (entry: NotPlain) => WorkerError;
}

/**
 * Rewrites an untrusted (optionally gzipped) tar as a clean uncompressed tar for `volume
 * import`: a './' folder first, then the prefix folders and `extraDirs`, then every accepted
 * entry under `prefix`, each owned by uid:gid with no user or group names, mode 0o755/0o644,
 * and its missing parent folders added before it, since an importer would create them owned
 * by root. Streams entry by entry; errors are emitted on the returned stream.
 */
export function sanitizeTar(input: Readable, options: SanitizeOptions): Readable {
  const label = options.label ?? 'archive';
  return writeTar(options, { gzip: false }, async (writer, signal) => {
    const prefix = folderParts(options.prefix ?? '', label);
    const made = new Set<string>();
    await writer.directory({ name: './', mode: 0o755 });
    await makeFolders(writer, made, prefix.join('/'));
    for (const extra of options.extraDirs ?? []) {
      await makeFolders(writer, made, folderParts(extra, label).join('/'));
    }
    const under = (name: string) => [...prefix, name].join('/');
    const entries = readTarEntries(input, {
      gzip: options.gzip,
      limits: options.limits,
      label,
      budget: options.budget,
      plainOnly: options.plainOnly,
    });
    for await (const entry of entries) {
      signal.throwIfAborted();
      for (const parent of entry.newParents) await makeFolders(writer, made, under(parent));
      await writeEntry(writer, entry, under, label);
    }
  });
}

export type FileEntry =
  | { name: string; size: number; stream: AsyncIterable<Uint8Array> }
  | { name: string; type: 'directory' };

/**
 * Builds a tar for `volume import` from files of known size (a storage blob's Content-Length),
 * each streamed as one entry without being held in memory, with a './' folder first and every
 * folder owned by uid:gid. A stream that gives more or fewer bytes than announced fails the
 * archive with a retryable STORAGE_FAILED error.
 */
export function tarFromFiles(
  files: AsyncIterable<FileEntry> | Iterable<FileEntry>,
  options: Owner & { limits?: Partial<TarLimits>; label?: string },
): Readable {
  const label = options.label ?? 'data';
  const limits = resolveLimits({
    maxTotalBytes: Number.MAX_SAFE_INTEGER,
    maxEntryBytes: Number.MAX_SAFE_INTEGER,
    ...options.limits,
  });
  return writeTar(options, { gzip: false }, async (writer, signal) => {
    const policy = new EntryPolicy({ label, limits });
    const made = new Set<string>();
    await writer.directory({ name: './', mode: 0o755 });
    for await (const file of files) {
      signal.throwIfAborted();
      const isFolder = 'type' in file;
      const checked = policy.check({
        name: file.name,
        type: isFolder ? 'directory' : 'file',
        size: isFolder ? 0 : file.size,
        mode: 0o644,
      });
      if (checked === undefined) continue;
      for (const parent of checked.newParents) await makeFolders(writer, made, parent);
      if (isFolder) {
        await makeFolders(writer, made, checked.name);
        continue;
      }
      const { name, size } = checked;
      await writer.file({ name, mode: checked.mode }, size, file.stream, (written) => {
        const got = written > size ? `more than ${size}` : `${written}`;
        return new WorkerError(
          'STORAGE_FAILED',
          `${label} file '${showName(name)}' gave ${got} bytes where ${size} were announced`,
          { retryable: true, hint: 'The download was probably cut short; try again.' },
        );
      });
    }
  });
}

/**
 * Turns an uncompressed tar (a volume export) into a .tar.gz of the entries under `folder`
 * (or all), with that folder stripped, plain relative names and owner 0:0. A submission
 * controls the volume, so the usual checks apply, except that links leaving the folder are
 * dropped rather than rejected: they mean nothing outside the volume anyway.
 */
export function packFolderFromTar(
  input: Readable,
  options: { folder?: string; limits?: Partial<TarLimits>; label?: string; budget?: SizeBudget },
): Readable {
  const label = options.label ?? 'volume export';
  return writeTar({ uid: 0, gid: 0 }, { gzip: true }, async (writer, signal) => {
    const made = new Set<string>();
    const entries = readTarEntries(input, {
      gzip: false,
      limits: options.limits,
      label,
      scope: options.folder ?? '',
      dropUnsafeLinks: true,
      budget: options.budget,
    });
    for await (const entry of entries) {
      signal.throwIfAborted();
      for (const parent of entry.newParents) await makeFolders(writer, made, parent);
      await writeEntry(writer, entry, (name) => name, label);
    }
  });
}

/**
 * Returns the regular file `name` of an uncompressed tar, or undefined when it is absent;
 * rejects it when larger than `maxBytes`. Reads (and checks) the archive to its end.
 */
export async function readFileFromTar(
  input: Readable,
  name: string,
  maxBytes: number,
  options: { limits?: Partial<TarLimits>; label?: string } = {},
): Promise<Buffer | undefined> {
  const label = options.label ?? 'archive';
  const [wanted] = wantedNames(name, options.limits);
  let found: Buffer | undefined;
  for await (const entry of readTarEntries(input, { ...options, gzip: false })) {
    if (found || entry.name !== wanted) continue;
    requireFile(entry, label);
    if (entry.size > maxBytes) throw tooLarge(entry, label, maxBytes);
    const chunks: Buffer[] = [];
    for await (const chunk of entry.body) chunks.push(chunk);
    found = Buffer.concat(chunks);
  }
  return found;
}

async function writeEntry(
  writer: TarWriter,
  entry: CheckedHeader & { body: AsyncIterable<Uint8Array> },
  rename: (name: string) => string,
  label: string,
): Promise<void> {
  const header = { name: rename(entry.name), mode: entry.mode, mtime: entry.mtime };
  switch (entry.type) {
    case 'directory':
      return writer.directory(header);
    case 'symlink':
      return writer.symlink(header, entry.linkname as string);
    case 'link':
      return writer.hardlink(header, rename(entry.linkname as string));
    case 'file':
      return writer.file(header, entry.size, entry.body, () =>
        archiveRejected(
          `${label} entry '${showName(entry.name)}' has a size that does not match its data`,
        ),
      );
  }
}

/** Adds `path` and its missing parents as folders, once each. */
async function makeFolders(writer: TarWriter, made: Set<string>, path: string): Promise<void> {
  if (path === '') return;
  const parts = path.split('/');
  for (let i = 1; i <= parts.length; i += 1) {
    const folder = parts.slice(0, i).join('/');
    if (made.has(folder)) continue;
    made.add(folder);
    await writer.directory({ name: folder, mode: 0o755 });
  }
}

function folderParts(path: string, label: string): string[] {
  const parts = nameParts(path, resolveLimits());
  if (typeof parts === 'string') {
    throw new WorkerError('INTERNAL', `folder '${showName(path)}' for the ${label} ${parts}`);
  }
  return parts;
}
