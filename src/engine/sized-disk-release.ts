import { readdir, readFile, realpath } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { execHost } from './exec.js';
import { loopDetachArgs, umountArgs } from './sized-disk-args.js';

const HOST_CALL_MS = 30_000;

export interface ReleasedDisks {
  /** Mount points unmounted: the disks' own and their binds over the engine's volume folders. */
  mounts: string[];
  /** Loop devices detached. */
  loops: string[];
}

interface LoopDevice {
  device: string;
  /** major:minor, as /proc/self/mountinfo names a mount's device. */
  number: string;
  backingFile: string;
}

/**
 * Unmounts every sized disk whose file lies under `root` (a task's temp folder, or a whole
 * worker's), wherever it is mounted, and detaches its loop device. Found from the kernel's
 * tables alone (loop devices' backing files, the mount table), so it releases what a
 * killed worker left as well as what a task made; the files go with `root` afterwards.
 * Another worker's disks are under another root and are never touched. Call it before the
 * engine's volumes are removed: podman cannot remove a volume whose folder is mounted over.
 */
export async function releaseSizedDisks(root: string): Promise<ReleasedDisks> {
  const base = await folderPrefix(root);
  const loops = (await loopDevices()).filter((loop) => loop.backingFile.startsWith(base));
  const numbers = new Set(loops.map((loop) => loop.number));
  const mounts = (await mountTable())
    .filter((m) => numbers.has(m.number) || m.mountPoint.startsWith(base))
    // Inner mounts first; the most recent first where one is mounted over another.
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length || b.id - a.id);
  const released: ReleasedDisks = { mounts: [], loops: [] };
  const errors: unknown[] = [];
  for (const mount of mounts) {
    try {
      await execHost('umount', umountArgs(mount.mountPoint), HOST_CALL_MS).catch(() =>
        // Busy (a process of the host works in it): detached now, gone once it is unused.
        execHost('umount', umountArgs(mount.mountPoint, true), HOST_CALL_MS),
      );
      released.mounts.push(mount.mountPoint);
    } catch (error) {
      errors.push(error); // the others are still released
    }
  }
  // The last unmount detaches a loop device mount(8) attached; one a killed mount(8) left,
  // or one still used by a container's mount namespace, is detached here (lazily if busy).
  for (const loop of loops) {
    const still = await readFile(`/sys/block/${loop.device}/loop/backing_file`, 'utf8').catch(
      () => '',
    );
    if (!still.startsWith(base)) continue;
    await execHost('losetup', loopDetachArgs(`/dev/${loop.device}`), HOST_CALL_MS).catch(
      () => undefined, // detached meanwhile
    );
    released.loops.push(`/dev/${loop.device}`);
  }
  if (errors.length > 0) throw errors[0];
  return released;
}

/**
 * The loop devices whose files lie under `root` that are still attached, waiting up to
 * `waitMs` for them to go: a filesystem is detached once the last namespace that mounts it
 * (a removed container's, say) is gone. One that stays is held by a process of the host.
 */
export async function attachedLoops(root: string, waitMs = 0): Promise<string[]> {
  const base = await folderPrefix(root);
  const deadline = Date.now() + waitMs;
  for (;;) {
    const left = (await loopDevices())
      .filter((loop) => loop.backingFile.startsWith(base))
      .map((loop) => `/dev/${loop.device}`);
    if (left.length === 0 || Date.now() >= deadline) return left;
    await new Promise((done) => setTimeout(done, 100));
  }
}

/** `root` as the kernel's tables name what lies under it: its real path and a slash. */
async function folderPrefix(root: string): Promise<string> {
  return `${await realpath(root).catch(() => resolve(root))}/`;
}

async function loopDevices(): Promise<LoopDevice[]> {
  const names = (await readdir('/sys/block').catch(() => [] as string[])).filter((name) =>
    /^loop\d+$/.test(name),
  );
  const found = await Promise.all(
    names.map(async (device): Promise<LoopDevice | undefined> => {
      try {
        const [file, number] = await Promise.all([
          readFile(join('/sys/block', device, 'loop', 'backing_file'), 'utf8'),
          readFile(join('/sys/block', device, 'dev'), 'utf8'),
        ]);
        // The kernel adds " (deleted)" once the file is gone; the path is still ours.
        const backingFile = file.trim().replace(/ \(deleted\)$/, '');
        return { device, number: number.trim(), backingFile };
      } catch {
        return undefined; // not attached
      }
    }),
  );
  return found.filter((loop): loop is LoopDevice => loop !== undefined);
}

export interface MountEntry {
  id: number;
  number: string;
  mountPoint: string;
  /** In a peer group: mounts and unmounts under it reach every namespace that copied it. */
  shared: boolean;
}

/**
 * /proc/self/mountinfo: "ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - ...",
 * octal escapes in paths; "shared:N" among the optional fields marks a shared mount.
 */
export function parseMountInfo(text: string): MountEntry[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const fields = line.split(' ');
      const optional = fields.slice(6, Math.max(6, fields.indexOf('-')));
      return {
        id: Number(fields[0]),
        number: fields[2] ?? '',
        mountPoint: unescapeMountPath(fields[4] ?? ''),
        shared: optional.some((field) => field.startsWith('shared:')),
      };
    });
}

function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(Number.parseInt(octal, 8)),
  );
}

export async function mountTable(): Promise<MountEntry[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
}
