import type { EngineInfo, IdMaps, RunLimits } from '../engine/types.js';
import type { Check } from './check.js';

/** Where the probe container mounts a volume read-only, as task inputs are mounted. */
export const PROBE_INPUT = '/probe-input';

/**
 * What the probe container prints about itself: only what the kernel says from inside
 * (/proc, the cgroup files), so a flag the engine ignored or a default it added shows.
 */
export const PROBE_SCRIPT = [
  "sed 's/^/mount=/' /proc/mounts",
  "grep -E '^(Uid|Gid|Cap(Eff|Prm|Bnd)|NoNewPrivs|Seccomp):' /proc/self/status | sed 's/^/status=/'",
  "grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' | sed 's/^/if=/'",
  'for f in memory/memory.limit_in_bytes memory.max pids/pids.max pids.max; do if [ -r /sys/fs/cgroup/$f ]; then echo "cgroup=$f=$(cat /sys/fs/cgroup/$f)"; fi; done',
  `if out=$(touch ${PROBE_INPUT}/probe 2>&1); then echo input=written; else echo "input=$out"; fi`,
  "head -n 1 /proc/self/uid_map | sed 's/^ */uidmap=/'",
  "grep '^Max core file size' /proc/self/limits | sed 's/^/limit=/'",
].join('; ');

export interface ProbeMount {
  target: string;
  type: string;
  options: string[];
}

export interface ProbeFacts {
  mounts: ProbeMount[];
  /** Fields of /proc/self/status: Uid, Gid, CapEff, CapPrm, CapBnd, NoNewPrivs, Seccomp. */
  status: Record<string, string>;
  interfaces: string[];
  /** The container's own cgroup limits as its files say: `memory`, `pids` (v1 or v2 names). */
  cgroup: { memory?: string; pids?: string };
  /** What a write into the read-only input mount gave: `written` or the error. */
  inputWrite?: string;
  /** The first line of /proc/self/uid_map: container id, host id, count. */
  uidMap?: [number, number, number];
  /** The soft and hard core dump limits. */
  core?: [string, string];
}

export function parseProbe(lines: readonly string[]): ProbeFacts {
  const facts: ProbeFacts = { mounts: [], status: {}, interfaces: [], cgroup: {} };
  for (const line of lines) {
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'mount') {
      const [, target, type, options] = value.split(' ');
      if (target && type && options)
        facts.mounts.push({ target, type, options: options.split(',') });
    } else if (key === 'status') {
      const m = /^(\w+):\s*(.*)$/.exec(value);
      if (m?.[1]) facts.status[m[1]] = (m[2] ?? '').trim();
    } else if (key === 'if') {
      facts.interfaces.push(value);
    } else if (key === 'cgroup') {
      const m =
        /^(?:memory\/memory\.limit_in_bytes|memory\.max|pids\/pids\.max|pids\.max)=(.*)$/.exec(
          value,
        );
      if (m) facts.cgroup[value.startsWith('memory') ? 'memory' : 'pids'] = m[1];
    } else if (key === 'input') {
      facts.inputWrite = value;
    } else if (key === 'uidmap') {
      const [inside, host, count] = value.trim().split(/\s+/).map(Number);
      if ([inside, host, count].every(Number.isInteger)) {
        facts.uidMap = [inside, host, count] as [number, number, number];
      }
    } else if (key === 'limit') {
      const [soft, hard] = value.replace('Max core file size', '').trim().split(/\s+/);
      if (soft && hard) facts.core = [soft, hard];
    }
  }
  return facts;
}

/** The mount that is seen at a path: the last one listed there hides the others. */
export function mountAt(facts: ProbeFacts, target: string): ProbeMount | undefined {
  return facts.mounts.filter((m) => m.target === target).at(-1);
}

/** `size=65536k` as bytes. */
export function tmpfsSize(mount: ProbeMount): number | undefined {
  const m = /^size=(\d+)([kmg]?)$/.exec(mount.options.find((o) => o.startsWith('size=')) ?? '');
  if (!m) return undefined;
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2] as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * unit;
}

const PAGE = 4096;
const roundToPage = (bytes: number) => Math.ceil(bytes / PAGE) * PAGE;

/** One finding per hardening promise, failing (never warning) when the inside says otherwise. */
export function judgeProbe(
  facts: ProbeFacts,
  info: Pick<EngineInfo, 'name' | 'unenforcedLimits'>,
  limits: RunLimits,
): Check[] {
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, message: string, hint: string) =>
    checks.push(ok ? { name, status: 'pass', message } : { name, status: 'fail', message, hint });
  const s = facts.status;
  const engineConf =
    info.name === 'podman'
      ? 'containers.conf ([containers] section)'
      : 'the daemon configuration (daemon.json)';

  const interfaces = facts.interfaces.join(', ') || 'none';
  check(
    'network',
    facts.interfaces.join(',') === 'lo',
    `network interfaces inside: ${interfaces}`,
    `the container must see only lo: --network=none is not honoured (check the network settings in ${engineConf})`,
  );

  const caps = ['CapEff', 'CapPrm', 'CapBnd'].map((k) => `${k} ${s[k] ?? '?'}`);
  const noCaps = ['CapEff', 'CapPrm', 'CapBnd'].every((k) => /^0+$/.test(s[k] ?? ''));
  check(
    'capabilities',
    noCaps,
    `capabilities inside: ${caps.join(', ')}`,
    `every capability set must be empty: something adds capabilities (--privileged, --cap-add, or the default capabilities in ${engineConf})`,
  );

  check(
    'no-new-privileges',
    s.NoNewPrivs === '1',
    `NoNewPrivs inside: ${s.NoNewPrivs ?? '?'}`,
    `setuid programs could gain privileges: --security-opt no-new-privileges is not honoured (check ${engineConf} and the OCI runtime)`,
  );

  check(
    'seccomp',
    s.Seccomp === '2',
    `seccomp mode inside: ${s.Seccomp ?? '?'} (2 is filtering)`,
    `the container runs without a seccomp filter: enable the engine's default seccomp profile (the seccomp profile in ${engineConf}; never seccomp=unconfined) on a kernel with CONFIG_SECCOMP_FILTER`,
  );

  const root = mountAt(facts, '/');
  check(
    'read-only-root',
    root?.options.includes('ro') === true,
    `root filesystem is mounted ${root ? root.options[0] : 'nowhere'} (/proc/mounts)`,
    `the root filesystem must be read-only: --read-only is not honoured (check ${engineConf} and the OCI runtime)`,
  );

  // Without a gid in --user the engine picks the user's group: only a given gid is checked.
  const [uid, gid] = limits.user.split(':');
  const ids = (v: string | undefined) => (v ?? '').split(/\s+/).filter(Boolean);
  const userOk =
    ids(s.Uid).length > 0 &&
    ids(s.Uid).every((v) => v === uid) &&
    (gid === undefined || ids(s.Gid).every((v) => v === gid));
  check(
    'user',
    userOk,
    `runs as uid ${ids(s.Uid)[0] ?? '?'}, gid ${ids(s.Gid)[0] ?? '?'} (expected ${limits.user})`,
    'containers must run as the non-root --user: the engine did not apply it',
  );

  const tmp = mountAt(facts, '/tmp');
  const tmpSize = tmp ? tmpfsSize(tmp) : undefined;
  const tmpOk =
    tmp?.type === 'tmpfs' &&
    tmp.options.includes('nosuid') &&
    tmp.options.includes('nodev') &&
    tmpSize === roundToPage(limits.tmpfsBytes);
  check(
    'tmp',
    tmpOk,
    tmp ? `/tmp is ${tmp.type} (${tmp.options.join(',')})` : '/tmp is not a mount of its own',
    `/tmp must be a tmpfs of ${limits.tmpfsBytes} bytes with nosuid,nodev: the engine did not apply --tmpfs`,
  );

  const unenforced = new Set(info.unenforcedLimits ?? []);
  if (!unenforced.has('memory')) {
    const seen = facts.cgroup.memory;
    check(
      'memory-limit',
      seen !== undefined && Number(seen) === roundToPage(limits.memoryBytes),
      `memory limit inside: ${seen ?? 'no cgroup file'} (expected ${limits.memoryBytes})`,
      'the cgroup memory limit is not applied: check that the memory controller is enabled for the engine',
    );
  }
  if (!unenforced.has('pids')) {
    const seen = facts.cgroup.pids;
    check(
      'pids-limit',
      seen === String(limits.pidsLimit),
      `process limit inside: ${seen ?? 'no cgroup file'} (expected ${limits.pidsLimit})`,
      'the cgroup pids limit is not applied: check that the pids controller is enabled for the engine',
    );
  }

  const input = facts.inputWrite ?? 'not tried';
  check(
    'read-only-inputs',
    /Read-only file system/.test(input),
    `a write into a read-only input mount: ${input}`,
    'volumes mounted :ro must refuse writes with EROFS: the engine or the OCI runtime ignored the ro option',
  );
  return checks;
}

/**
 * Whether the probe container's ids are its own: `expected` is the range it was given (a
 * task's container gets one like it), or why containers share the engine's namespace.
 */
export function judgeUserns(facts: ProbeFacts, expected: IdMaps | string): Check {
  const map = facts.uidMap;
  const seen = map ? `uid ${map[0]} inside is host uid ${map[1]} (${map[2]} ids)` : 'no uid_map';
  if (typeof expected === 'string') {
    return {
      name: 'userns',
      status: 'warn',
      message: `containers share the engine's user namespace (${expected}): ${seen}; one task's processes count against every other task's process limit (--nproc), and their files are the same host user's`,
      hint: 'with rootful podman, add `containers:2147483647:2147483648` to /etc/subuid and /etc/subgid (a range no user has) and keep --container-userns auto',
    };
  }
  const own = map !== undefined && map[1] === expected.uid.start && map[2] === expected.uid.count;
  return own
    ? {
        name: 'userns',
        status: 'pass',
        message: `each container has host ids of its own: the probe's ${seen}, a range no other container or user has`,
      }
    : {
        name: 'userns',
        status: 'fail',
        message: `the probe container was given host ids ${expected.uid.start}:${expected.uid.count} but sees ${seen}`,
        hint: 'the engine does not honour --uidmap: check its version and containers.conf (userns settings)',
      };
}

export function judgeCoreDumps(facts: ProbeFacts): Check {
  const core = facts.core;
  return core?.[0] === '0' && core[1] === '0'
    ? {
        name: 'core-dumps',
        status: 'pass',
        message: 'no core dumps inside (limit 0, soft and hard)',
      }
    : {
        name: 'core-dumps',
        status: 'fail',
        message: `core dump limit inside: ${core ? core.join(' / ') : 'unknown'}: a crashing submission could write cores through the host's core_pattern`,
        hint: '--ulimit core=0:0 is not honoured: check the engine and OCI runtime',
      };
}
