import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { workerLiveDir, workerTmpDir } from '../../src/config/paths.js';
import { releaseSizedDisks } from '../../src/engine/sized-disk-release.js';

/**
 * A real `compute-worker run` process, as an operator starts it: its JSON log lines
 * are parsed as they come so a test can wait for one and assert on all of them.
 */

const root = fileURLToPath(new URL('../../', import.meta.url));
export const BIN = join(root, 'bin', 'run.js');

export async function succeeds(command: string, args: string[]): Promise<boolean> {
  const result = await execa(command, args, { reject: false });
  return result.exitCode === 0;
}

export const hasPodman = await succeeds('podman', ['--version']);
export const requireEngines = process.env.CW_TEST_REQUIRE_ENGINES === '1';
/** crun fails on hybrid-cgroup hosts; runc works wherever podman does. */
export const ociRuntime = (await succeeds('runc', ['--version'])) ? 'runc' : undefined;

/** The tests run the built CLI: `npm test` builds before vitest. */
export function assertBuilt(): void {
  if (!existsSync(join(root, 'dist', 'commands', 'run.js'))) {
    throw new Error('dist/ is missing: run `npm run build` before these tests');
  }
}

export interface LogLine {
  level: number;
  msg: string;
  time?: string;
  task?: string;
  [key: string]: unknown;
}

export const WARN = 40;
export const ERROR = 50;

export class WorkerProcess {
  readonly lines: LogLine[] = [];
  /** Everything the process wrote, parsed or not, for the secrets check. */
  output = '';
  /** Lines of stderr that were not JSON. */
  readonly other: string[] = [];
  readonly exited: Promise<{ exitCode?: number; signal?: string }>;
  private readonly waiters = new Set<() => void>();
  private buffer = '';

  constructor(
    readonly child: ResultPromise,
    readonly stateDir: string,
  ) {
    const take = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      this.output += text;
      this.buffer += text;
      let nl = this.buffer.indexOf('\n');
      while (nl >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        this.parse(line);
        nl = this.buffer.indexOf('\n');
      }
      for (const wake of this.waiters) wake();
    };
    child.stderr?.on('data', take);
    child.stdout?.on('data', (chunk: Buffer) => {
      this.output += chunk.toString('utf8');
    });
    this.exited = child.then(
      (r) => ({ exitCode: r.exitCode, signal: r.signal }),
      (r) => ({ exitCode: r.exitCode, signal: r.signal }),
    );
    void this.exited.then(() => {
      for (const wake of this.waiters) wake();
    });
  }

  private parse(line: string): void {
    if (line.trim() === '') return;
    try {
      const json = JSON.parse(line) as LogLine;
      if (typeof json === 'object' && json !== null && typeof json.msg === 'string') {
        this.lines.push(json);
        return;
      }
    } catch {
      // kept below
    }
    this.other.push(line);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The id the worker labels its containers with (written on its first start). */
  async workerId(): Promise<string> {
    return (await readFile(join(this.stateDir, 'worker-id'), 'utf8')).trim();
  }

  /** Resolves with the first log line (from the start) that matches; fails after `timeoutMs`. */
  waitForLine(match: (line: LogLine) => boolean, timeoutMs: number, what: string) {
    return new Promise<LogLine>((resolve, reject) => {
      let exited = false;
      void this.exited.then(() => {
        exited = true;
      });
      const check = () => {
        const found = this.lines.find(match);
        if (found) {
          done();
          resolve(found);
        } else if (exited) {
          done();
          reject(new Error(`worker exited before logging ${what}; its log:\n${this.tail()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`timed out after ${timeoutMs} ms waiting for ${what}; log:\n${this.tail()}`),
        );
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Log lines whose message contains `text`. */
  find(text: string): LogLine[] {
    return this.lines.filter((l) => l.msg.includes(text));
  }

  tail(n = 40): string {
    return this.output.split('\n').slice(-n).join('\n');
  }

  kill(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

export interface Services {
  storage: { host: string; port: number };
  orchestrator: { host: string; port: number };
  storagePassword?: string;
  orchestratorPassword?: string;
}

/** The flags every test worker gets: local services, runc, JSON logs, short delays. */
export function workerArgs(services: Services, stateDir: string): string[] {
  return [
    '--storage-host',
    services.storage.host,
    '--storage-port',
    String(services.storage.port),
    '--orchestrator-host',
    services.orchestrator.host,
    '--orchestrator-port',
    String(services.orchestrator.port),
    ...(ociRuntime ? ['--oci-runtime', ociRuntime] : []),
    '--state-dir',
    stateDir,
    '--log-format',
    'json',
    '--lookupd-poll-interval',
    '1s',
    '--retry-delay',
    '1s',
    '--retry-max-delay',
    '2s',
    '--memory',
    '256m',
  ];
}

/**
 * Starts and tracks workers for one test file; `cleanup()` kills them (SIGKILL) and
 * removes whatever containers and volumes carry their worker labels.
 */
export class WorkerFleet {
  readonly workers: WorkerProcess[] = [];
  private readonly stateDirs = new Set<string>();

  async newStateDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'cw-worker-state-'));
    this.stateDirs.add(dir);
    return dir;
  }

  /**
   * Spawns `bin/run.js run ARGS` (or another `command`, [] for none); passwords go through
   * the environment, as an operator should pass them. `stateDir` reuses a folder (a
   * restart of the same worker).
   */
  async start(args: string[], options: { env?: Record<string, string>; command?: string[] } = {}) {
    const stateIndex = args.indexOf('--state-dir');
    const stateDir = stateIndex >= 0 ? (args[stateIndex + 1] as string) : '';
    if (stateDir) this.stateDirs.add(stateDir);
    const child = execa('node', [BIN, ...(options.command ?? ['run']), ...args], {
      cwd: root,
      env: { ...options.env, NODE_NO_WARNINGS: '1' },
      reject: false,
      stdin: 'ignore',
      buffer: false,
      // A draining worker may take longer than execa's 5 s before it escalates to SIGKILL.
      forceKillAfterDelay: false,
    });
    const worker = new WorkerProcess(child, stateDir);
    this.workers.push(worker);
    return worker;
  }

  /** Names of containers and volumes labelled with this worker's id. */
  async leftovers(workerId: string): Promise<{ containers: string[]; volumes: string[] }> {
    const label = `label=compute-worker.worker=${workerId}`;
    const runtime = ociRuntime ? ['--runtime', ociRuntime] : [];
    const [containers, volumes] = await Promise.all([
      execa('podman', [...runtime, 'ps', '-a', '--filter', label, '--format', '{{.Names}}'], {
        reject: false,
      }),
      execa('podman', ['volume', 'ls', '--filter', label, '--format', '{{.Name}}'], {
        reject: false,
      }),
    ]);
    const names = (s: unknown) =>
      String(s ?? '')
        .split('\n')
        .filter(Boolean);
    return { containers: names(containers.stdout), volumes: names(volumes.stdout) };
  }

  async workerIds(): Promise<string[]> {
    const ids = new Set<string>();
    for (const dir of this.stateDirs) {
      try {
        ids.add((await readFile(join(dir, 'worker-id'), 'utf8')).trim());
      } catch {
        // never started far enough to have an id
      }
    }
    return [...ids];
  }

  /** Kills every worker, then removes what they left and reports it (it should be nothing). */
  async cleanup(): Promise<{ containers: string[]; volumes: string[] }> {
    for (const w of this.workers) w.kill('SIGKILL');
    await Promise.all(this.workers.map((w) => w.exited));
    const left = { containers: [] as string[], volumes: [] as string[] };
    const runtime = ociRuntime ? ['--runtime', ociRuntime] : [];
    for (const id of await this.workerIds()) {
      const found = await this.leftovers(id);
      left.containers.push(...found.containers);
      left.volumes.push(...found.volumes);
      if (found.containers.length)
        await execa('podman', [...runtime, 'rm', '-f', '-t', '0', ...found.containers], {
          reject: false,
        });
      if (found.volumes.length)
        await execa('podman', ['volume', 'rm', '-f', ...found.volumes], { reject: false });
    }
    // Killed workers that are never started again: their temp folders go with their state.
    for (const id of await this.workerIds()) {
      // A killed worker's steps may still have their sized filesystems mounted there.
      await releaseSizedDisks(workerTmpDir(id));
      await rm(workerTmpDir(id), { recursive: true, force: true });
      // The lock it held for its life, beside its temp folder.
      await rm(workerLiveDir(id), { recursive: true, force: true });
    }
    for (const dir of this.stateDirs) await rm(dir, { recursive: true, force: true });
    this.workers.splice(0);
    this.stateDirs.clear();
    return left;
  }
}
