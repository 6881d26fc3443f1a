import { posix } from 'node:path';
import { formatSize } from '../config/size.js';
import { WorkerError } from '../errors.js';

/** Caps on what one untrusted archive may hold; checked while reading, before any data is kept. */
export interface TarLimits {
  maxEntries: number;
  /** Sum of all entries' declared sizes. */
  maxTotalBytes: number;
  maxEntryBytes: number;
  /** Characters of an entry's name or link target, after pax and GNU long-name overrides. */
  maxPathLength: number;
  /** Path components of an entry's name. */
  maxDepth: number;
}

export const DEFAULT_TAR_LIMITS: TarLimits = {
  maxEntries: 100_000,
  maxTotalBytes: 10 * 1024 ** 3,
  maxEntryBytes: 10 * 1024 ** 3,
  maxPathLength: 4096,
  maxDepth: 64,
};

/**
 * tar-stream buffers one pax or GNU long-name header up to this size (its own constant, not an
 * option) and fails beyond it, so one header never costs more memory than this.
 */
export const TAR_STREAM_MAX_HEADER_BYTES = 4 * 1024 * 1024;

export function resolveLimits(limits: Partial<TarLimits> = {}): TarLimits {
  const merged = { ...DEFAULT_TAR_LIMITS, ...limits };
  for (const [key, value] of Object.entries(merged)) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new WorkerError('INTERNAL', `tar limit ${key} must be a non-negative integer`);
    }
  }
  return merged;
}

/**
 * Bytes of raw tar allowed in all: the data plus, per entry, a header, padding and a pax or
 * long-name record for a name and a link target, plus some end blocks. Bounds archives of
 * endless zero blocks or of pax headers without entries, which tar-stream reads past.
 */
export function rawByteCap(limits: TarLimits): number {
  const perEntry = 3 * 512 + 2 * (limits.maxPathLength + 512);
  return limits.maxTotalBytes + limits.maxEntries * perEntry + 16 * 1024 ** 2;
}

/**
 * A cap on the bytes of one or more archives that a person sets (a flag), shared by every
 * stream that draws on it: the raw (decompressed) tar bytes are charged as they pass, and an
 * entry whose declared size cannot fit fails at its header, before any of its data is read.
 */
export class SizeBudget {
  private usedBytes = 0;

  /** `exceeded` builds the error that names the setting; `at` is the entry, when known. */
  constructor(
    readonly maxBytes: number,
    private readonly exceeded: (at?: string) => WorkerError,
  ) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new WorkerError('INTERNAL', 'a size budget must be a non-negative integer');
    }
  }

  get used(): number {
    return this.usedBytes;
  }

  /** Counts bytes that went by. */
  charge(bytes: number, at?: string): void {
    this.usedBytes += bytes;
    if (this.usedBytes > this.maxBytes) throw this.exceeded(at);
  }

  /** Fails when `bytes` more cannot fit, without counting them (they are charged as they pass). */
  fits(bytes: number, at?: string): void {
    if (this.usedBytes + bytes > this.maxBytes) throw this.exceeded(at);
  }
}

/** What a header's type is, in words, for messages: "a symbolic link", "a FIFO". */
export function describeEntryType(type: string | null | undefined): string {
  switch (type) {
    case 'symlink':
      return 'a symbolic link';
    case 'link':
      return 'a hard link';
    case 'fifo':
      return 'a FIFO';
    case 'character-device':
      return 'a character device';
    case 'block-device':
      return 'a block device';
    case 'file':
    case 'contiguous-file':
      return 'a regular file';
    case 'directory':
      return 'a folder';
    default:
      return `an entry of type ${type ?? 'unknown'}`;
  }
}

/** What `plainOnly` is told about an entry that is neither a regular file nor a folder (names shown safely). */
export interface NotPlain {
  name: string;
  /** In words: "a symbolic link", "a FIFO". */
  kind: string;
  linkname?: string;
}

export type EntryType = 'file' | 'directory' | 'symlink' | 'link';

/** An entry that passed every check; names are plain relative paths without './' or a final '/'. */
export interface CheckedHeader {
  name: string;
  type: EntryType;
  /** Bytes of data that follow in the archive (0 but for files). */
  size: number;
  /** 0o755 or 0o644 for files, 0o755 for folders: no setuid, setgid, sticky or write for others. */
  mode: number;
  mtime: Date;
  /** symlink: the target as written (relative, checked to stay inside); link: the archive name of an earlier file. */
  linkname?: string;
  /** Parent folders that no earlier entry named: whoever writes the entry creates them first. */
  newParents: string[];
}

export interface PolicyOptions {
  /** Who the archive is, in messages: "model archive", "build context". */
  label: string;
  limits: TarLimits;
  /** Only entries under this folder are kept, with the folder stripped; the rest is skipped unchecked. */
  scope?: string;
  /** Drop links that leave the archive folder instead of rejecting the archive. */
  dropUnsafeLinks?: boolean;
  /** Entries' declared sizes must fit in it (raw bytes are charged by the reader). */
  budget?: SizeBudget;
  /** When set, only regular files and folders are allowed: anything else fails with this error. */
  plainOnly?: (entry: NotPlain) => WorkerError;
}

type Seen = 'file' | 'directory' | 'symlink';

/** A header as tar-stream gives it after pax and GNU overrides; any field may be missing or odd. */
export interface RawHeader {
  name: string;
  size?: number | null;
  mode?: number | null;
  mtime?: Date;
  type?: string | null;
  linkname?: string | null;
}

/** Shows an untrusted name in a message: control characters escaped, length capped. */
export function showName(name: string): string {
  const escaped = JSON.stringify(name).slice(1, -1);
  return escaped.length > 200 ? `${escaped.slice(0, 200)}...` : escaped;
}

const SAFE_CONTENT_HINT =
  'Make the archive hold only regular files, folders and links that stay inside it.';

export function archiveRejected(
  message: string,
  options: { detail?: string; hint?: string } = {},
): WorkerError {
  return new WorkerError('ARCHIVE_REJECTED', message, {
    retryable: false,
    hint: options.hint ?? SAFE_CONTENT_HINT,
    ...(options.detail === undefined ? {} : { detail: options.detail }),
  });
}

/**
 * Checks a name and returns it as plain relative components, or the rule it breaks. Any '..'
 * is refused even where it would normalise away, because a kernel resolves 'a/link/../b'
 * through the link while a normaliser does not.
 */
export function nameParts(raw: string, limits: TarLimits): string[] | string {
  if (raw.includes('\0')) return 'has a NUL character in its name';
  if (raw.length > limits.maxPathLength) {
    return `has a name longer than ${limits.maxPathLength} characters`;
  }
  if (raw.startsWith('/')) return 'has an absolute name';
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) return 'leaves the archive folder';
  if (parts.length > limits.maxDepth) return `is nested deeper than ${limits.maxDepth} folders`;
  return parts;
}

/**
 * A symlink stays inside when its target, read from the link's folder, stays inside and every
 * '..' comes before any other component: later '..' would be resolved from wherever an
 * earlier link component points, which a string check cannot know.
 */
export function symlinkStaysInside(name: string, target: string): boolean {
  if (target === '' || target.startsWith('/') || target.includes('\0')) return false;
  let descended = false;
  for (const part of target.split('/')) {
    if (part === '..') {
      if (descended) return false;
    } else if (part !== '' && part !== '.') {
      descended = true;
    }
  }
  const resolved = posix.normalize(posix.join(posix.dirname(name), target));
  return resolved !== '..' && !resolved.startsWith('../');
}

/**
 * Walks an archive's headers in order and decides about each one. It remembers what every
 * earlier name was, so a later entry cannot be written through an earlier symlink, replace an
 * earlier entry, or hard-link to anything but a regular file already in the archive.
 */
export class EntryPolicy {
  private readonly seen = new Map<string, Seen>();
  private entries = 0;
  private bytes = 0;

  constructor(private readonly options: PolicyOptions) {}

  get totals(): { entries: number; bytes: number } {
    return { entries: this.entries, bytes: this.bytes };
  }

  /** Returns the checked entry, or undefined when it is to be skipped (its data drained). */
  check(header: RawHeader): CheckedHeader | undefined {
    const { limits, label } = this.options;
    const raw = header.name ?? '';
    const size = header.size ?? 0;
    const reject = (rule: string) => archiveRejected(`${label} entry '${showName(raw)}' ${rule}`);

    this.entries += 1;
    if (this.entries > limits.maxEntries) {
      throw archiveRejected(`${label} has more than ${limits.maxEntries} entries`);
    }
    if (!Number.isSafeInteger(size) || size < 0) throw reject('has an invalid size');
    this.options.budget?.fits(size, showName(raw));
    if (size > limits.maxEntryBytes) {
      throw reject(`is larger than the ${formatSize(limits.maxEntryBytes)} allowed per entry`);
    }
    this.bytes += size;
    if (this.bytes > limits.maxTotalBytes) {
      throw archiveRejected(
        `${label} holds more than the ${formatSize(limits.maxTotalBytes)} allowed (at entry '${showName(raw)}')`,
      );
    }

    const parts = nameParts(raw, limits);
    if (typeof parts === 'string') throw reject(parts);
    this.checkPlain(header, parts);
    const scoped = this.inScope(parts);
    if (scoped === undefined) return undefined;
    const name = scoped.join('/');

    const type = entryType(header.type);
    if (type === undefined)
      throw reject(`has a type that is not allowed (${header.type ?? 'unknown'})`);
    if (name === '') {
      if (type === 'directory') return undefined;
      throw reject('is the archive folder itself but not a folder');
    }

    const linkname = this.checkLink(type, name, header.linkname ?? '', reject);
    if (linkname === null) {
      this.seen.set(name, 'symlink'); // nothing may be written through it either
      return undefined;
    }

    const newParents = this.checkParents(scoped, reject);
    const before = this.seen.get(name);
    if (before !== undefined && !(before === 'directory' && type === 'directory')) {
      throw reject('appears twice in the archive or replaces an earlier entry');
    }
    this.seen.set(name, type === 'link' ? 'file' : type);

    return {
      name,
      type,
      size: type === 'file' ? size : 0,
      mode: cleanMode(type, header.mode ?? 0),
      mtime: header.mtime ?? new Date(0),
      newParents,
      ...(linkname === undefined ? {} : { linkname }),
    };
  }

  private checkPlain(header: RawHeader, parts: string[]): void {
    const { plainOnly } = this.options;
    const type = header.type ?? 'unknown';
    if (!plainOnly || ['file', 'contiguous-file', 'directory'].includes(type)) return;
    throw plainOnly({
      name: showName(parts.join('/') || '.'),
      kind: describeEntryType(type),
      ...(header.linkname ? { linkname: showName(header.linkname) } : {}),
    });
  }

  private inScope(parts: string[]): string[] | undefined {
    const scope = this.options.scope?.split('/').filter((part) => part !== '' && part !== '.');
    if (!scope || scope.length === 0) return parts;
    if (parts.length < scope.length || scope.some((part, i) => parts[i] !== part)) {
      return undefined;
    }
    return parts.slice(scope.length);
  }

  /** The link target to write, undefined for non-links, null when an unsafe link is dropped. */
  private checkLink(
    type: EntryType,
    name: string,
    target: string,
    reject: (rule: string) => WorkerError,
  ): string | undefined | null {
    if (type !== 'symlink' && type !== 'link') return undefined;
    const { limits, dropUnsafeLinks } = this.options;
    if (target.length > limits.maxPathLength) {
      throw reject(`has a link target longer than ${limits.maxPathLength} characters`);
    }
    if (type === 'symlink') {
      if (symlinkStaysInside(name, target)) return target;
      if (dropUnsafeLinks) return null;
      throw reject(`is a symbolic link to '${showName(target)}', which leaves the archive folder`);
    }
    const parts = nameParts(target, limits);
    const scoped = typeof parts === 'string' ? undefined : this.inScope(parts);
    const resolved = scoped?.join('/');
    if (resolved !== undefined && this.seen.get(resolved) === 'file') return resolved;
    if (dropUnsafeLinks) return null;
    throw reject(
      `is a hard link to '${showName(target)}', which is not a regular file earlier in the archive`,
    );
  }

  private checkParents(parts: string[], reject: (rule: string) => WorkerError): string[] {
    const created: string[] = [];
    for (let i = 1; i < parts.length; i += 1) {
      const parent = parts.slice(0, i).join('/');
      const kind = this.seen.get(parent);
      if (kind === 'symlink')
        throw reject(`is written through the symbolic link '${showName(parent)}'`);
      if (kind === 'file') throw reject(`is inside '${showName(parent)}', which is not a folder`);
      if (kind === undefined) {
        this.seen.set(parent, 'directory');
        created.push(parent);
      }
    }
    return created;
  }
}

/** Keeps only the executable bit's meaning: what a build or a model needs from a mode. */
function cleanMode(type: EntryType, mode: number): number {
  if (type !== 'file') return type === 'symlink' ? 0o777 : 0o755;
  return (mode & 0o111) !== 0 ? 0o755 : 0o644;
}

function entryType(type: RawHeader['type']): EntryType | undefined {
  switch (type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
    case 'symlink':
    case 'link':
      return type;
    default:
      return undefined;
  }
}
