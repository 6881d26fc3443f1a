/**
 * Arguments of the host tools that make, mount and release a task's sized filesystem
 * (sized-disk.ts runs them). Pure: unit-tested without a loop device.
 */

const MIB = 1024 * 1024;
/** ext4's usual ratio, one inode per 16 KiB: the file count grows with the limit. */
const BYTES_PER_INODE = 16 * 1024;
const MIN_INODES = 16_384;
/** As many files as the poll's walk counts at most (DISK_MAX_ENTRIES): the same bound. */
export const MAX_INODES = 1_000_000;
const INODE_BYTES = 256;
/** ext4 keeps min(2 %, 16 MiB) of its blocks back from every writer (s_resv_clusters). */
const RESERVED_SHARE = 0.02;
const RESERVED_MAX = 16 * MIB;

export interface DiskLayout {
  /** Apparent size of the sparse file: what the filesystem spans. */
  fileBytes: number;
  inodes: number;
}

/**
 * A filesystem whose free space, as an unprivileged writer sees it, is a little more than
 * `limitBytes` (by about 1 MiB plus 0.4 %): inode tables and ext4's reserve come on top, so a
 * full filesystem always reads as past the limit. The file is sparse and the inode tables
 * are never written out (lazy_itable_init, noinit_itable), so what it takes on the host's
 * disk is what was written into it, and at most `fileBytes`.
 */
export function diskLayout(limitBytes: number): DiskLayout {
  const inodes = Math.min(
    MAX_INODES,
    Math.max(MIN_INODES, Math.ceil(limitBytes / BYTES_PER_INODE)),
  );
  const reserved = Math.min(RESERVED_MAX, Math.ceil(limitBytes * RESERVED_SHARE));
  const slack = MIB + Math.ceil(limitBytes / 256); // bitmaps, group descriptors, root folder
  const bytes = limitBytes + inodes * INODE_BYTES + reserved + slack;
  return { fileBytes: Math.ceil(bytes / 4096) * 4096, inodes };
}

/**
 * ext4 without a journal (the filesystem is thrown away with its task, a crash included), no
 * blocks kept for root (a container's root user fills it as anyone else), no resize
 * reserve, and nothing zeroed or discarded up front: formatting 20 GiB takes milliseconds.
 */
export function mkfsArgs(file: string, layout: DiskLayout): string[] {
  return [
    '-q',
    '-F',
    '-b',
    '4096',
    '-m',
    '0',
    '-N',
    String(layout.inodes),
    '-O',
    '^has_journal,^resize_inode',
    '-E',
    'lazy_itable_init=1,nodiscard',
    file,
  ];
}

/**
 * mount(8) attaches a loop device that is detached with the last unmount (autoclear).
 * noinit_itable: the kernel does not zero the inode tables in the background, which would
 * write them out to the host's disk.
 */
export function loopMountArgs(file: string, dir: string): string[] {
  return ['-t', 'ext4', '-o', 'loop,nodev,nosuid,noinit_itable', file, dir];
}

export function bindMountArgs(from: string, to: string): string[] {
  return ['--bind', from, to];
}

/** `lazy`: detach at once, the filesystem goes once nothing uses it (a container's mount namespace). */
export function umountArgs(dir: string, lazy = false): string[] {
  return lazy ? ['-l', dir] : [dir];
}

/** Only that one mount, not those under it: they are shared when made under it. */
export function makeSharedArgs(mountPoint: string): string[] {
  return ['--make-shared', mountPoint];
}

export function loopDetachArgs(device: string): string[] {
  return ['-d', device];
}
