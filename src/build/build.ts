import { createHash, randomBytes } from 'node:crypto';
import { copyFile, lstat, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extractTarToDir } from '../archive/safe-tar.js';
import { formatSize } from '../config/size.js';
import {
  buildArgs,
  imageVolumesArgs,
  isBuildMarkWarning,
  removeImageArgs,
} from '../engine/args.js';
import type { EngineContext, SharedBuild } from '../engine/context.js';
import { capDetail, type ExecResult, execEngine, execEngineRaw, hintFor } from '../engine/exec.js';
import { imageExists } from '../engine/images.js';
import type { BuildRequest, BuildResult } from '../engine/types.js';
import { WorkerError } from '../errors.js';
import { baseImages } from './base-images.js';
import { pruneBases } from './base-prune.js';
import { hostHintOf } from './blame.js';
import { buildOom, confineBuild } from './confine.js';
import { buildDiskLimitError, checkBuiltImageSize, watchBuildDisk } from './disk.js';
import { type BuildPolicy, checkContainerfile } from './policy.js';
import { ENGINE_TMP_BASE, moveBuiltImage, syncBases } from './store.js';
import { handContext } from './user.js';

const ROLE = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
const MAX_CONTAINERFILE_BYTES = 1024 * 1024;
/** After execa's SIGTERM and its SIGKILL 5 s later. */
const KILL_BACKSTOP_MS = 6_000;

/**
 * Builds localhost/compute-worker/<role>:<sha256 of the context bytes>. The context is
 * hashed while it is extracted (checked, into a folder only this user can read) and the
 * folder is removed whatever happens. A context built before costs one existence check.
 */
export async function buildImage(ctx: EngineContext, request: BuildRequest): Promise<BuildResult> {
  // The lookup this build shares is told, once, whether it asks: the others wait for it.
  let lookupDone = false;
  const lookup: Lookup = {
    exists: (image, call) => {
      lookupDone = true;
      return request.lookup ? request.lookup.exists(image, call) : imageExists(ctx, image, call);
    },
    pass: () => {
      if (!lookupDone) request.lookup?.pass();
      lookupDone = true;
    },
  };
  try {
    return await buildLookingUp(ctx, request, lookup);
  } finally {
    lookup.pass();
  }
}

interface Lookup {
  exists(image: string, call: { timeoutMs: number; signal: AbortSignal }): Promise<boolean>;
  pass(): void;
}

async function buildLookingUp(
  ctx: EngineContext,
  request: BuildRequest,
  lookup: Lookup,
): Promise<BuildResult> {
  if (!ROLE.test(request.role)) {
    throw new WorkerError('INTERNAL', `invalid image role "${request.role}"`);
  }
  const started = Date.now();
  // mkdtemp creates the folder with mode 0700. In the worker's temp folder (the engine's
  // work folder), which a worker restarted after a crash empties.
  const dir = await mkdtemp(join(ctx.cli.workDir ?? tmpdir(), 'cw-build-'));
  // A build shared with other calls owns the folder until it ends, whoever waits for it.
  let handedOver = false;
  try {
    const digest = await hashAndExtract(request, dir, ctx.options.maxContextBytes);
    const image = `localhost/compute-worker/${request.role}:${digest}`;
    // Checked before the cache: an image built under an older or looser policy is not reused.
    const policy = policyFor(ctx, request.role);
    const containerfiles = await checkContainerfiles(dir, policy, ctx.info.name);
    await request.onImage?.(image);
    const done = (cached: boolean, joined = false) => ({
      image,
      digest,
      cached,
      durationMs: Date.now() - started,
      ...(joined ? { joined } : {}),
    });
    const running = ctx.builds?.get(image);
    if (running) {
      lookup.pass();
      await waitFor(running, request);
      return done(true, true);
    }
    const shared = startShared(ctx, image, async (signal, onLine) => {
      try {
        const call = { timeoutMs: ctx.options.callTimeoutMs, signal };
        if (await lookup.exists(image, call)) return { cached: true };
        await runBuild(
          ctx,
          { ...request, signal, onOutputLine: onLine },
          image,
          dir,
          containerfiles,
        );
        if (policy === 'strict') await refuseImageVolumes(ctx, image);
        ctx.knownImages?.add(image);
        return { cached: false };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
    handedOver = true;
    return done((await waitFor(shared, request)).cached);
  } finally {
    if (!handedOver) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Runs the lookup and build of an image once for every call that needs it meanwhile. The
 * build has its own signal: it is cancelled only when every waiting call has given up, so
 * the first caller's cancellation does not fail the others. A failure is everyone's.
 */
function startShared(
  ctx: EngineContext,
  image: string,
  work: (signal: AbortSignal, onLine: (line: string) => void) => Promise<{ cached: boolean }>,
): SharedBuild {
  const controller = new AbortController();
  const lines = new Set<(line: string) => void>();
  const shared: SharedBuild = {
    controller,
    lines,
    waiters: 0,
    result: work(controller.signal, (line) => {
      for (const onLine of lines) onLine(line);
    }).finally(() => {
      if (ctx.builds?.get(image) === shared) ctx.builds.delete(image);
    }),
  };
  // Nobody may be waiting any more when it fails (all cancelled).
  shared.result.catch(() => {});
  // A build being cancelled is not joined: the next call starts its own.
  controller.signal.addEventListener('abort', () => {
    if (ctx.builds?.get(image) === shared) ctx.builds.delete(image);
  });
  ctx.builds?.set(image, shared);
  return shared;
}

async function waitFor(shared: SharedBuild, request: BuildRequest): Promise<{ cached: boolean }> {
  const { signal } = request;
  if (signal?.aborted) {
    if (shared.waiters === 0) shared.controller.abort();
    throw new WorkerError('CANCELLED', 'The image build was cancelled');
  }
  const onLine = (line: string) => request.onOutputLine?.(line);
  shared.waiters++;
  shared.lines.add(onLine);
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new WorkerError('CANCELLED', 'The image build was cancelled'));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([shared.result, aborted]);
  } finally {
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    shared.lines.delete(onLine);
    shared.waiters--;
    if (shared.waiters === 0 && signal?.aborted) {
      shared.controller.abort();
      // The last one to cancel returns once the build is killed and its folders removed.
      await shared.result.catch(() => {});
    }
  }
}

async function hashAndExtract(
  request: BuildRequest,
  dir: string,
  maxBytes: number | undefined,
): Promise<string> {
  const hash = createHash('sha256');
  // Hashes exactly the bytes the extractor reads (a 'data' listener would race it).
  const tee = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const feeding = pipeline(request.context, tee);
  // Each entry's size is counted from its header before its body is written.
  const limits = maxBytes ? { maxTotalBytes: maxBytes, maxEntryBytes: maxBytes } : {};
  const extracting = extractTarToDir(tee, dir, { gzip: true, limits }).catch((error: unknown) => {
    tee.destroy();
    request.context.destroy();
    throw maxBytes ? overCap(error, maxBytes) : error;
  });
  const [extracted, fed] = await Promise.allSettled([extracting, feeding]);
  // A rejected archive explains more than the broken pipe it causes, and a failed download
  // more than the truncated archive it causes.
  if (extracted.status === 'rejected' && extracted.reason instanceof WorkerError)
    throw extracted.reason;
  if (fed.status === 'rejected') {
    if (fed.reason instanceof WorkerError) throw fed.reason;
    throw new WorkerError('ARCHIVE_REJECTED', 'The build context could not be read', {
      cause: fed.reason,
    });
  }
  if (extracted.status === 'rejected') throw extracted.reason;
  return hash.digest('hex');
}

/** A context past --max-context-size is the task's to fix: said as such, naming the flag. */
function overCap(error: unknown, maxBytes: number): unknown {
  if (!(error instanceof WorkerError) || error.code !== 'ARCHIVE_REJECTED') return error;
  if (!/allowed( per entry)?\b/.test(error.message) || !/than the/.test(error.message))
    return error;
  return new WorkerError(
    'BUILD_CONTEXT_REJECTED',
    `The build context is larger than --max-context-size (${formatSize(maxBytes)}): ${error.message}`,
    { hint: 'make the context smaller, or raise --max-context-size (default: --disk-limit)' },
  );
}

/** A submission is always built under the strict policy; the workflow as configured; anything else strictly. */
export function policyFor(ctx: EngineContext, role: string): BuildPolicy {
  if (role === 'workflow') return ctx.options.workflowBuildPolicy ?? 'trusted';
  return 'strict';
}

/**
 * Checks every Containerfile/Dockerfile at the root (builders differ in which they take);
 * returns the one the engine would take by itself, which the build names explicitly (a
 * remote podman would otherwise look in its service's working folder), and the text of
 * each, read once here, while the folder is the worker's alone.
 */
async function checkContainerfiles(
  dir: string,
  policy: BuildPolicy,
  engine: string,
): Promise<Containerfiles> {
  const names = (await readdir(dir)).filter((name) =>
    ['containerfile', 'dockerfile'].includes(name.toLowerCase()),
  );
  if (names.length === 0) {
    throw new WorkerError(
      'BUILD_CONTEXT_REJECTED',
      'The build context has no Dockerfile or Containerfile at its root',
      {
        hint: 'put a Dockerfile (or Containerfile) at the top of the .tar.gz, not inside a folder',
      },
    );
  }
  const texts = new Map<string, string>();
  for (const name of names) {
    const path = join(dir, name);
    const info = await lstat(path);
    // A link is read where it points, which the policy would not have checked.
    if (!info.isFile()) {
      throw new WorkerError(
        'BUILD_CONTEXT_REJECTED',
        `The build context's ${name} is ${fileKind(info)}, not a regular file`,
        { hint: `put the ${name} itself at the top of the .tar.gz` },
      );
    }
    if (info.size > MAX_CONTAINERFILE_BYTES) {
      throw new WorkerError(
        'BUILD_CONTEXT_REJECTED',
        `The build context's ${name} is larger than 1 MiB`,
      );
    }
    const content = await readFile(path);
    checkContainerfile(content, name, policy);
    texts.set(name, content.toString('utf8'));
  }
  // buildah looks for Containerfile first, docker for Dockerfile.
  const order =
    engine === 'podman'
      ? ['Containerfile', 'Dockerfile', 'containerfile', 'dockerfile']
      : ['Dockerfile', 'Containerfile', 'dockerfile', 'containerfile'];
  const preferred = order.find((n) => names.includes(n)) ?? (names[0] as string);
  return { name: preferred, text: texts.get(preferred) ?? '', all: [...texts.values()] };
}

/** The context's Containerfiles as checked: the one the build takes, and every one's text. */
interface Containerfiles {
  name: string;
  text: string;
  all: string[];
}

function fileKind(info: Awaited<ReturnType<typeof lstat>>): string {
  if (info.isSymbolicLink()) return 'a symbolic link';
  if (info.isDirectory()) return 'a folder';
  if (info.isFIFO()) return 'a named pipe';
  return 'a special file';
}

/**
 * A base image's VOLUMEs are inherited, and each becomes an anonymous host volume when a
 * container starts: a strictly checked image that has any is removed and refused.
 */
async function refuseImageVolumes(ctx: EngineContext, image: string): Promise<void> {
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const volumes = Object.keys(
    (JSON.parse(await execEngine(ctx.cli, imageVolumesArgs(image), call)) as Record<
      string,
      unknown
    > | null) ?? {},
  );
  if (volumes.length === 0) return;
  await execEngineRaw(ctx.cli, removeImageArgs(image), call);
  throw new WorkerError(
    'BUILD_CONTEXT_REJECTED',
    `The built image declares VOLUME ${volumes.slice(0, 5).join(', ')} (from its base image): a submission image may not`,
    { hint: 'start FROM a base image without VOLUME instructions' },
  );
}

async function runBuild(
  ctx: EngineContext,
  request: BuildRequest,
  image: string,
  dir: string,
  containerfiles: Containerfiles,
): Promise<void> {
  const confinement = await confineBuild(ctx, request.role, request.buildId);
  const asUser = confinement?.asUser;
  const store = confinement?.store;
  // The engine that builds: in the build's own store (the build user's rootless podman, or
  // the host's), or, where there is none (docker, a remote podman), the host's.
  const engine = store?.engine ?? ctx;
  const diskLimit = confinement ? ctx.options.buildDiskLimitBytes : undefined;
  // Past the disk limit the build is stopped as a cancel would stop it.
  const stopper = new AbortController();
  const onCancel = () => stopper.abort();
  request.signal?.addEventListener('abort', onCancel, { once: true });
  if (request.signal?.aborted) stopper.abort();
  let diskSeen: number | undefined;
  const watch =
    confinement && diskLimit
      ? watchBuildDisk(
          engine,
          confinement.isolation.mark,
          diskLimit,
          (bytes) => {
            diskSeen = bytes;
            stopper.abort();
          },
          { tmpDir: confinement.tmpDir, ownStore: store !== undefined },
        )
      : undefined;
  // A rootless podman re-executes itself in the user's namespace: SIGKILLed at a stop or
  // the build timeout, the first process leaves that one running, holding the output
  // pipes the worker waits on. The build's cgroup is killed whole a moment later.
  const killWhole = () => void confinement?.cgroup?.killAll().catch(() => undefined);
  let backstop: NodeJS.Timeout | undefined;
  const onStop = () => {
    backstop = setTimeout(killWhole, KILL_BACKSTOP_MS);
  };
  stopper.signal.addEventListener('abort', onStop, { once: true });
  let deadline: NodeJS.Timeout | undefined;
  let failed = true;
  let thrown = false;
  let remoteFile: string | undefined;
  let pruning: Promise<unknown> | undefined;
  try {
    // From the texts read while the context was the worker's: once handed to the build
    // user, what is in it is that user's to change (a link to a file only root may read).
    const bases = store ? baseImages(containerfiles.all) : [];
    let contextDir = dir;
    if (asUser) {
      await handContext(dir, asUser.contextDir, asUser.user);
      contextDir = asUser.contextDir;
    }
    if (store) {
      await syncBases(ctx, store.bases, bases, stopper.signal);
      // While it builds, copies of bases the host dropped go (never the build's failure):
      // never one the host has, so never one of this build's.
      pruning = pruneBases(ctx, store.bases).catch(() => []);
    }
    let file = join(contextDir, containerfiles.name);
    if (engine.info.name === 'podman' && engine.info.engineHost) {
      // podman 4.3's service reads a --file inside the context relative to its own working
      // folder (and so builds whatever Containerfile lies there); one outside the context
      // is sent with it. The random name cannot be one of the context's own files.
      remoteFile = `${dir}-${randomBytes(8).toString('hex')}.Containerfile`;
      await copyFile(file, remoteFile);
      file = remoteFile;
    }
    const args = buildArgs(engine.info, {
      tag: image,
      contextDir,
      containerfile: file,
      labels: request.labels,
      isolation: confinement?.isolation,
    });
    deadline = setTimeout(killWhole, ctx.options.buildTimeoutMs + KILL_BACKSTOP_MS);
    const result = await execEngineRaw(engine.cli, args, {
      timeoutMs: ctx.options.buildTimeoutMs,
      signal: stopper.signal,
      onLine: (line) => {
        if (!isBuildMarkWarning(line)) request.onOutputLine?.(line);
      },
      tailLines: 200,
      tailBytes: 32 * 1024,
      onSpawn: confinement?.onSpawn,
      env: confinement?.env,
    });
    await watch?.stop();
    // A killed CLI leaves its RUN processes running and its working containers behind.
    if (result.exitCode !== 0 || result.timedOut || result.cancelled) {
      await confinement?.cgroup?.killAll();
    }
    failed = result.exitCode !== 0 || result.timedOut || result.cancelled;
    if (diskSeen !== undefined && diskLimit) {
      // The image may have been committed just before the kill.
      await execEngineRaw(engine.cli, removeImageArgs(image), {
        timeoutMs: ctx.options.callTimeoutMs,
      });
      throw buildDiskLimitError(diskSeen, diskLimit, 'layers');
    }
    // Whose fault a failed build is; a build that exited cleanly needs no reading.
    const hint =
      result.exitCode === 0
        ? undefined
        : confinement
          ? await hostHintOf(
              result.outputTail,
              engine.info.graphRoot,
              diskLimit,
              containerfiles.text,
            )
          : hintFor(result.outputTail);
    // The participant reads this output: the worker's folders are not named in it.
    const places = [contextDir, dir, remoteFile];
    const shown = { ...result, outputTail: withoutPaths(result.outputTail, places) };
    throwIfFailed(ctx, shown, await buildOom(confinement, result), hint);
    // Measured where it was built: one too big never reaches the host's store.
    if (diskLimit) await checkBuiltImageSize(engine, image, diskLimit, store !== undefined);
    if (store) await moveBuiltImage(store, ctx, image, stopper.signal);
  } catch (error) {
    thrown = true;
    throw error;
  } finally {
    clearTimeout(deadline);
    clearTimeout(backstop);
    stopper.signal.removeEventListener('abort', onStop);
    if (remoteFile) await rm(remoteFile, { force: true });
    await watch?.stop();
    await pruning;
    request.signal?.removeEventListener('abort', onCancel);
    // The build's own error says what went wrong; a clean-up that also failed must not hide it.
    await confinement?.release(ctx, failed).catch((error: unknown) => {
      if (!thrown) throw error;
    });
  }
}

/** buildah's own folders of a build (its store and temp folder, its run root link). */
const BUILD_FOLDERS = new RegExp(`${ENGINE_TMP_BASE}/cw-(?:build-tmp|run)-[^\\s"':]*`, 'g');

/** The text with each of these folders (and what lies under them) named by its role. */
export function withoutPaths(text: string, places: readonly (string | undefined)[]): string {
  let out = text;
  const named = places.filter((p): p is string => !!p).sort((a, b) => b.length - a.length);
  for (const place of named) out = out.split(place).join('<context>');
  return out.replace(BUILD_FOLDERS, '<build>');
}

function throwIfFailed(
  ctx: EngineContext,
  result: ExecResult,
  oom: string | undefined,
  hint: string | undefined,
): void {
  if (result.cancelled) throw new WorkerError('CANCELLED', 'The image build was cancelled');
  const detail = capDetail(result.outputTail);
  if (result.timedOut) {
    throw new WorkerError(
      'BUILD_FAILED',
      `The image build did not finish within ${ctx.options.buildTimeoutMs} ms`,
      {
        detail,
        hint: 'the build context takes too long to build: make it smaller, or raise --build-timeout',
      },
    );
  }
  if (result.exitCode === 0) return;
  if (oom) {
    throw new WorkerError('BUILD_FAILED', `The image build ran out of memory (${oom})`, {
      detail,
      hint: 'a RUN step needs more memory than a build may use: use less, or raise --build-memory',
    });
  }
  // A host problem (crun on hybrid cgroups, a full disk) is not the context's fault.
  if (hint) {
    throw new WorkerError('ENGINE_FAILED', `${ctx.cli.name} build failed on this host`, {
      retryable: true,
      detail,
      hint,
    });
  }
  throw new WorkerError('BUILD_FAILED', `The image build failed (exit code ${result.exitCode})`, {
    detail,
  });
}
