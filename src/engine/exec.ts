import { tmpdir } from 'node:os';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import { WorkerError } from '../errors.js';
import { engineHostArgs } from './args.js';
import { LineSplitter, LogTail } from './log-tail.js';
import { podmanRuntimeDir } from './runtime-dir.js';

/**
 * The one place that runs the engine CLI. Every call is bounded in time and in captured
 * output, cancellable, and a failure becomes a WorkerError with the engine's own words.
 */
export interface ExecOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** Bytes fed to the CLI's stdin (a tar stream for volume import, docker cp). */
  input?: Readable;
  /** Cap of the captured stdout; more is an error (an inspect that large is not normal). */
  maxStdoutBytes?: number;
  /** Lines of stdout and stderr as they come (build output, container logs). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Tail kept of stderr (and of stdout when it is streamed to onLine). */
  tailLines?: number;
  tailBytes?: number;
  env?: Record<string, string>;
  /**
   * Called with the CLI's pid at once after it started, before it can have started
   * anything else (a build moves it into its own cgroup); a throw kills the CLI.
   */
  onSpawn?: (pid: number) => void;
  /** Sent at the deadline or on abort (default SIGTERM, then SIGKILL 5 s later). */
  killSignal?: 'SIGKILL';
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  /** Last lines of stderr (and of stdout when streamed), size-capped. */
  outputTail: string;
  timedOut: boolean;
  cancelled: boolean;
}

const DEFAULT_MAX_STDOUT = 16 * 1024 * 1024;
const DETAIL_BYTES = 8 * 1024;

export interface EngineCli {
  name: 'podman' | 'docker';
  path: string;
  /** Where the CLI runs (see EngineOptions.workDir). */
  workDir?: string;
  /** The remote engine every call goes to (EngineInfo.engineHost); undefined: the local one. */
  engineHost?: string;
  /** Runs the CLI as this host user (rootless podman of the build user), with only this environment. */
  user?: CliUser;
  /** Global flags before the command (a build's own store: see storeArgs). */
  globalArgs?: readonly string[];
}

export interface CliUser {
  uid: number;
  gid: number;
  env: Record<string, string>;
}

/** Runs the CLI and returns what happened; does not throw on a non-zero exit. */
export async function execEngineRaw(
  cli: EngineCli,
  args: readonly string[],
  options: ExecOptions,
): Promise<ExecResult> {
  const subprocess = spawnEngine(cli, args, options);
  if (options.onSpawn && subprocess.pid !== undefined) {
    try {
      options.onSpawn(subprocess.pid);
    } catch (error) {
      subprocess.kill('SIGKILL');
      await subprocess.catch(() => undefined);
      throw error;
    }
  }
  const maxStdout = options.maxStdoutBytes ?? DEFAULT_MAX_STDOUT;
  const tail = new LogTail(options.tailLines ?? 200, options.tailBytes ?? 64 * 1024);
  const stdoutChunks: Buffer[] = [];
  let stdoutBytes = 0;
  let stdoutOverflow = false;
  const streamLines = (stream: 'stdout' | 'stderr') =>
    new LineSplitter((line) => {
      tail.push(line);
      options.onLine?.(line, stream);
    });
  const errLines = streamLines('stderr');
  const outLines = options.onLine ? streamLines('stdout') : undefined;
  subprocess.stderr?.on('data', (chunk: Buffer) => errLines.write(chunk));
  subprocess.stdout?.on('data', (chunk: Buffer) => {
    if (outLines) return outLines.write(chunk);
    stdoutBytes += chunk.length;
    if (stdoutBytes > maxStdout) {
      if (!stdoutOverflow) subprocess.kill('SIGKILL');
      stdoutOverflow = true;
      return;
    }
    stdoutChunks.push(chunk);
  });
  const feeding = options.input ? feed(options.input, subprocess) : Promise.resolve(undefined);
  const result = await subprocess;
  const inputError = await feeding;
  errLines.end();
  outLines?.end();
  const failure = result as { code?: string; originalMessage?: string };
  if (failure.code === 'ENOENT') {
    throw new WorkerError(
      'ENGINE_NOT_FOUND',
      `The container engine CLI ${cli.path} was not found`,
      {
        hint: 'install podman (apt-get install podman runc) or docker, or pass --engine-path',
      },
    );
  }
  if (stdoutOverflow) {
    throw new WorkerError(
      'ENGINE_FAILED',
      `${cli.name} ${args[0]} wrote more than ${maxStdout} bytes`,
      {
        retryable: true,
      },
    );
  }
  // The input's own failure (e.g. an archive that was rejected) explains more than the engine's.
  if (inputError instanceof WorkerError) throw inputError;
  const exitCode = result.exitCode ?? (result.failed ? 1 : 0);
  // A broken stdin pipe is only news when the CLI itself succeeded.
  if (inputError && exitCode === 0 && !result.timedOut && !result.isCanceled) {
    throw new WorkerError('ENGINE_FAILED', `Feeding ${cli.name} ${args[0]} failed: ${inputError}`, {
      retryable: true,
      cause: inputError,
    });
  }
  return {
    exitCode,
    stdout: Buffer.concat(stdoutChunks).toString(),
    outputTail: tail.toString(),
    timedOut: result.timedOut,
    cancelled: result.isCanceled,
  };
}

/** Runs the CLI and returns its stdout; a non-zero exit, timeout or abort throws. */
export async function execEngine(
  cli: EngineCli,
  args: readonly string[],
  options: ExecOptions,
): Promise<string> {
  const result = await execEngineRaw(cli, args, options);
  checkResult(cli, args, result, options.timeoutMs);
  return result.stdout;
}

/**
 * podman reads every image of the store to list or prune images, and fails the whole call
 * ("image not known") when any of them, perhaps another worker's, is removed meanwhile. On
 * a shared host that is common: such a call is made again, a few times, a moment later.
 */
export async function execImageListing(
  cli: EngineCli,
  args: readonly string[],
  options: ExecOptions,
): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const result = await execEngineRaw(cli, args, options);
    const raced = result.exitCode !== 0 && VANISHED_IMAGE.test(result.outputTail);
    if (!raced || attempt >= LISTING_ATTEMPTS || options.signal?.aborted) {
      checkResult(cli, args, result, options.timeoutMs);
      return result.stdout;
    }
    await sleep(50 * attempt);
  }
}

// An image removed while podman read it: "image not known", "layer not known", or, when
// its manifest went between the listing and the read, "reading data blob size ...: size
// is not known".
const VANISHED_IMAGE = /(image|layer) not known|reading data blob size [^\n]*size is not known/i;
// A store busy with a sibling's builds and removals can race every call for a while.
const LISTING_ATTEMPTS = 20;

export function checkResult(
  cli: EngineCli,
  args: readonly string[],
  result: ExecResult,
  timeoutMs: number,
): void {
  const what = `${cli.name} ${args.slice(0, 2).join(' ')}`;
  if (result.cancelled) throw new WorkerError('CANCELLED', `${what} was cancelled`);
  if (result.timedOut) {
    throw new WorkerError('ENGINE_FAILED', `${what} did not finish within ${timeoutMs} ms`, {
      retryable: true,
      detail: capDetail(result.outputTail),
      hint: 'the engine may be overloaded or stuck: check `podman ps` / `docker ps` and the engine service',
    });
  }
  if (result.exitCode !== 0) throw engineFailure(what, result.exitCode, result.outputTail);
}

export function engineFailure(what: string, exitCode: number, stderr: string): WorkerError {
  return new WorkerError('ENGINE_FAILED', `${what} failed with exit code ${exitCode}`, {
    retryable: true,
    detail: capDetail(stderr),
    hint: hintFor(stderr),
  });
}

/** Known engine failures on real hosts, and what fixes them. */
export function hintFor(stderr: string): string | undefined {
  if (stderr.includes('cgroups in hybrid mode not supported')) {
    return "crun cannot run on this host's hybrid cgroups: install runc and pass --oci-runtime runc (or COMPUTE_WORKER_OCI_RUNTIME=runc)";
  }
  // runc 1.1 says "error setting rlimit type 7: operation not permitted: OCI permission denied".
  if (/setrlimit|error setting rlimit/.test(stderr)) {
    return "the engine's default ulimits exceed this host's hard limits: keep explicit --ulimit nofile/nproc values at or below `ulimit -Hn` / `ulimit -Hu`";
  }
  if (/cannot connect to the docker daemon|docker\.sock/i.test(stderr)) {
    return 'start the docker daemon (dockerd) or choose podman with --engine podman';
  }
  if (/unable to connect to Podman socket/i.test(stderr)) {
    return 'the podman service of --engine-host does not answer: start it there (podman system service --time=0 URL, or systemctl enable --now podman.socket) and check the URL';
  }
  if (/no space left on device/i.test(stderr)) {
    return "the engine's storage is full: remove unused images and volumes (podman system prune)";
  }
  if (/could not select device driver .* capabilities: \[\[gpu\]\]/i.test(stderr)) {
    return "docker gives GPUs through the NVIDIA Container Toolkit's hook (nvidia-container-runtime-hook), which this host lacks: install the toolkit, or use podman with a CDI spec";
  }
  if (/unresolvable CDI devices|\/dev\/nvidia/i.test(stderr)) {
    return 'a GPU device of the CDI spec cannot be given to the container: run compute-worker doctor, and regenerate the spec (nvidia-ctk cdi generate) after a driver change';
  }
  if (/newuidmap|subuid|subgid/i.test(stderr)) {
    return 'rootless podman needs entries for this user in /etc/subuid and /etc/subgid and the uidmap package';
  }
  return undefined;
}

export function capDetail(text: string): string {
  const bytes = Buffer.from(text);
  return bytes.length <= DETAIL_BYTES
    ? text
    : `…${bytes.subarray(bytes.length - DETAIL_BYTES).toString()}`;
}

/** Starts the CLI with its stdout as a stream, for callers that consume it (volume export, logs). */
export function spawnEngine(
  cli: EngineCli,
  args: readonly string[],
  options: Pick<ExecOptions, 'timeoutMs' | 'signal' | 'input' | 'env' | 'killSignal'>,
): ResultPromise<{ buffer: false }> {
  const user = cli.user
    ? { uid: cli.user.uid, gid: cli.user.gid, extendEnv: false, env: cli.user.env }
    : { env: {} };
  const global = [...engineHostArgs(cli.name, cli.engineHost), ...(cli.globalArgs ?? [])];
  return execa(cli.path, [...global, ...args], {
    cwd: cli.workDir ?? tmpdir(),
    buffer: false,
    reject: false,
    stdin: options.input ? 'pipe' : 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    timeout: options.timeoutMs,
    cancelSignal: options.signal,
    forceKillAfterDelay: 5_000,
    killSignal: options.killSignal ?? 'SIGTERM',
    // A process group of its own: a signal sent to the worker's group (Ctrl-C, systemd's
    // KillMode=control-group, timeout(1)) would reach `start --attach`, which passes it
    // into the container, and a stop meant for the worker would end the submission.
    detached: true,
    ...user,
    // Node drops the supplementary groups when it changes the user.
    env: { ...user.env, LC_ALL: 'C', ...options.env, ...pinnedRuntimeDir(cli, options.env) },
  }) as unknown as ResultPromise<{ buffer: false }>;
}

/** A rootless podman given a TMPDIR of its own keeps to the runtime folder it has without. */
function pinnedRuntimeDir(cli: EngineCli, env: Record<string, string> | undefined) {
  const uid = cli.user?.uid ?? process.getuid?.();
  if (cli.name !== 'podman' || !env?.TMPDIR || env.XDG_RUNTIME_DIR || !uid) return {};
  return { XDG_RUNTIME_DIR: podmanRuntimeDir(cli.user?.env ?? process.env, uid) };
}

/**
 * For a CLI spawned with its stdout consumed elsewhere (spawnEngine): keeps the tail of its
 * stderr, and once it has ended throws what went wrong, as execEngine would.
 */
export function watchStreamed(what: string, sub: ResultPromise<{ buffer: false }>) {
  const tail = new LogTail(50, 8 * 1024);
  const lines = new LineSplitter((line) => tail.push(line));
  sub.stderr?.on('data', (chunk: Buffer) => lines.write(chunk));
  return {
    /** Throws for a cancel, a timeout or a non-zero exit of the ended CLI. */
    check(result: { isCanceled: boolean; timedOut: boolean; exitCode?: number }): void {
      lines.end();
      if (result.isCanceled) throw new WorkerError('CANCELLED', `${what} was cancelled`);
      if (result.timedOut) {
        throw new WorkerError('ENGINE_FAILED', `${what} timed out`, {
          retryable: true,
          detail: capDetail(tail.toString()),
        });
      }
      if (result.exitCode !== 0) throw engineFailure(what, result.exitCode ?? 1, tail.toString());
    },
  };
}

async function feed(
  input: Readable,
  subprocess: ResultPromise<{ buffer: false }>,
): Promise<unknown> {
  if (!subprocess.stdin) return new Error('no stdin');
  try {
    await pipeline(input, subprocess.stdin);
    return undefined;
  } catch (error) {
    input.destroy();
    return error;
  }
}

/**
 * Runs a host tool of the worker's own (mkfs.ext4, mount, umount, losetup for a task's sized
 * filesystem), bounded in time; a failure throws with the tool's own words.
 */
export async function execHost(
  command: string,
  args: readonly string[],
  timeoutMs: number,
): Promise<string> {
  const result = await execa(command, args, {
    reject: false,
    stdin: 'ignore',
    timeout: timeoutMs,
    forceKillAfterDelay: 5_000,
    // As the engine's CLIs: a stop meant for the worker does not cut a mount or umount short.
    detached: true,
    env: { LC_ALL: 'C' },
  });
  const what = `${command} ${args.slice(0, 2).join(' ')}`;
  if ((result as { code?: string }).code === 'ENOENT') {
    throw new WorkerError('ENGINE_FAILED', `${command} was not found`, {
      retryable: true,
      hint: 'install e2fsprogs and util-linux (mkfs.ext4, mount, losetup)',
    });
  }
  if (result.timedOut) {
    throw new WorkerError('ENGINE_FAILED', `${what} did not finish within ${timeoutMs} ms`, {
      retryable: true,
    });
  }
  if (result.exitCode !== 0) {
    throw new WorkerError('ENGINE_FAILED', `${what} failed with exit code ${result.exitCode}`, {
      retryable: true,
      detail: capDetail(String(result.stderr)),
    });
  }
  return String(result.stdout);
}
