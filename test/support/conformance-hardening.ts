import { expect, it, type TestContext } from 'vitest';
import type { Engine, RunLimits, RunResult, RunSpec } from '../../src/engine/types.js';
import { readableOf, tarOf } from './engine-tar.js';

export interface HardeningDeps {
  ready(ctx: TestContext): Engine;
  run(e: Engine, script: string, extra?: Partial<RunSpec>): Promise<RunResult>;
  labels: Record<string, string>;
  /** The limits `run` uses. */
  limits: RunLimits;
}

/**
 * What a container sees of itself, printed from inside. It is read here with its own
 * plain patterns, not with doctor's parser, so that a mistake in one does not hide in both.
 */
const LOOK_INSIDE = [
  "sed 's/^/mount /' /proc/mounts",
  "grep -E '^(Uid|Gid|Cap[A-Za-z]+|NoNewPrivs|Seccomp):' /proc/self/status",
  "grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' | sed 's/^/if=/'",
  "ls /sys/class/net | sed 's/^/sysnet=/'",
  'echo pid=$$',
  "grep -E '^Max (open files|processes|core file size) ' /proc/self/limits",
  // An attacker's question: where can I write? Every mount point is tried.
  'for m in $(cut -d\' \' -f2 /proc/mounts | sort -u); do if touch "$m/.cw-probe" 2>/dev/null; then echo "writable=$m"; fi; done',
  'for f in memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes memory.max memory.swap.max pids/pids.max pids.max cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu.max; do if [ -r /sys/fs/cgroup/$f ]; then echo "cgroup $f=$(cat /sys/fs/cgroup/$f)"; fi; done',
].join('; ');

const KIB = 1024;

/** Hardening promises proven from inside a container started by the engine's own `run`. */
export function defineHardeningTests(d: HardeningDeps): void {
  let inside: Promise<string[]> | undefined;
  const look = (e: Engine): Promise<string[]> => {
    inside ??= d.run(e, LOOK_INSIDE).then((result) => {
      expect(result.exitCode, result.logTail).toBe(0);
      return result.logTail.split('\n');
    });
    return inside;
  };
  const field = (lines: string[], prefix: string) =>
    lines.find((l) => l.startsWith(prefix))?.slice(prefix.length);
  /** The mount seen at a path (the last listed hides the others), as [type, options]. */
  const mountAt = (lines: string[], target: string) => {
    const fields = lines
      .filter((l) => l.startsWith('mount ') && l.split(' ')[2] === target)
      .at(-1)
      ?.split(' ');
    return fields ? { type: fields[3], options: (fields[4] ?? '').split(',') } : undefined;
  };

  it('sees no network interface but lo', async (ctx) => {
    const lines = await look(d.ready(ctx));
    expect(lines.filter((l) => l.startsWith('if='))).toEqual(['if=lo']);
    expect(lines.filter((l) => l.startsWith('sysnet='))).toEqual(['sysnet=lo']);
  });

  it('holds no capability: CapEff, CapPrm and CapBnd are all empty', async (ctx) => {
    const lines = await look(d.ready(ctx));
    // CapEff is empty for any non-root user; the bounding set is what a setuid file could regain.
    for (const cap of ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb']) {
      expect(field(lines, `${cap}:`)?.trim(), cap).toMatch(/^0+$/);
    }
  });

  it('cannot gain privileges: NoNewPrivs is 1 and a seccomp filter is on (mode 2)', async (ctx) => {
    const lines = await look(d.ready(ctx));
    expect(field(lines, 'NoNewPrivs:')?.trim()).toBe('1');
    expect(field(lines, 'Seccomp:')?.trim()).toBe('2');
  });

  it('has its root mounted read-only (/proc/mounts)', async (ctx) => {
    const lines = await look(d.ready(ctx));
    expect(mountAt(lines, '/')?.options[0]).toBe('ro');
  });

  it('runs as the configured non-root user and group', async (ctx) => {
    const lines = await look(d.ready(ctx));
    const [uid, gid] = d.limits.user.split(':');
    expect(uid).not.toBe('0');
    // Real, effective, saved and filesystem ids.
    expect(field(lines, 'Uid:')?.trim().split(/\s+/)).toEqual([uid, uid, uid, uid]);
    expect(field(lines, 'Gid:')?.trim().split(/\s+/)).toEqual([gid, gid, gid, gid]);
  });

  it('has /tmp as a tmpfs of the configured size with nosuid,nodev, and /dev/shm of its size', async (ctx) => {
    const lines = await look(d.ready(ctx));
    const tmp = mountAt(lines, '/tmp');
    expect(tmp?.type).toBe('tmpfs');
    expect(tmp?.options).toEqual(
      expect.arrayContaining(['rw', 'nosuid', 'nodev', `size=${d.limits.tmpfsBytes / KIB}k`]),
    );
    expect(mountAt(lines, '/dev/shm')?.options).toContain(`size=${d.limits.shmBytes / KIB}k`);
  });

  it('can write into no mount but /tmp, /dev/shm and /dev/mqueue', async (ctx) => {
    const lines = await look(d.ready(ctx));
    const writable = lines.filter((l) => l.startsWith('writable=')).map((l) => l.slice(9));
    expect(writable.sort()).toEqual(['/dev/mqueue', '/dev/shm', '/tmp']);
  });

  it('runs its command under an init process, not as PID 1', async (ctx) => {
    const lines = await look(d.ready(ctx));
    // PID 1 ignores signals it has no handler for and reaps no orphans.
    expect(field(lines, 'pid=')).not.toBe('1');
  });

  it('has the configured nofile and nproc limits and no core dumps, soft and hard', async (ctx) => {
    const lines = await look(d.ready(ctx));
    const limit = (name: string) => field(lines, `Max ${name} `)?.trim().split(/\s+/).slice(0, 2);
    expect(limit('open files')).toEqual([String(d.limits.nofile), String(d.limits.nofile)]);
    expect(limit('processes')).toEqual([String(d.limits.nproc), String(d.limits.nproc)]);
    expect(limit('core file size')).toEqual(['0', '0']);
  });

  it('sees its memory (no extra swap), process and CPU limits in its cgroup files where the engine enforces them', async (ctx) => {
    const e = d.ready(ctx);
    const lines = await look(e);
    const unenforced = new Set(e.info.unenforcedLimits ?? []);
    const cgroup = (file: string) => field(lines, `cgroup ${file}=`);
    const v2 = e.info.cgroupVersion === 2;
    if (unenforced.size === 3) {
      expect(e.info.rootless && e.info.cgroupVersion === 1).toBe(true);
      return;
    }
    const memory = String(d.limits.memoryBytes);
    const pids = String(d.limits.pidsLimit);
    const quota = String(Math.round(d.limits.cpus * 100_000));
    if (v2) {
      if (!unenforced.has('memory')) {
        expect(cgroup('memory.max')).toBe(memory);
        expect(cgroup('memory.swap.max')).toBe('0');
      }
      if (!unenforced.has('pids')) expect(cgroup('pids.max')).toBe(pids);
      if (!unenforced.has('cpus')) expect(cgroup('cpu.max')).toBe(`${quota} 100000`);
      return;
    }
    expect(cgroup('memory/memory.limit_in_bytes')).toBe(memory);
    expect(cgroup('memory/memory.memsw.limit_in_bytes')).toBe(memory);
    expect(cgroup('pids/pids.max')).toBe(pids);
    expect(cgroup('cpu/cpu.cfs_period_us')).toBe('100000');
    expect(cgroup('cpu/cpu.cfs_quota_us')).toBe(quota);
  });

  it('refuses writes into a volume mounted read-only with EROFS, though the user owns its files', async (ctx) => {
    const e = d.ready(ctx);
    const [uid, gid] = d.limits.user.split(':').map(Number);
    const owner = { uid: uid ?? 1000, gid: gid ?? uid ?? 1000 };
    const volume = await e.createVolume(d.labels);
    await e.importVolume(
      volume,
      readableOf(
        await tarOf([
          { name: 'in', ...owner },
          { name: 'in/owned.txt', content: 'input\n', ...owner },
        ]),
      ),
    );
    const attack = [
      'for w in "echo x >> /data/in/owned.txt" "echo x > /data/in/new.txt" "rm /data/in/owned.txt" "mkdir /data/in/d"; do',
      '  if out=$(sh -c "$w" 2>&1); then echo "done: $w"; else echo "refused: $w: $out"; fi',
      'done',
    ].join('\n');
    const readOnly = await d.run(e, attack, {
      mounts: [{ volume, target: '/data', readOnly: true }],
    });
    const refused = readOnly.logTail.split('\n').filter((l) => l.startsWith('refused: '));
    expect(refused, readOnly.logTail).toHaveLength(4);
    for (const line of refused) expect(line).toMatch(/Read-only file system/);
    // The same writes through a read-write mount succeed: the refusal above is the mount's.
    const readWrite = await d.run(e, attack, { mounts: [{ volume, target: '/data' }] });
    expect(readWrite.logTail.split('\n').filter((l) => l.startsWith('done: '))).toHaveLength(4);
  });
}
