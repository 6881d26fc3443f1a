import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { createEngine, engineFor } from '../../src/container-engine.js';
import { probeEngine } from '../../src/doctor/probe.js';
import { createArgs } from '../../src/engine/args.js';
import { execEngine, execEngineRaw } from '../../src/engine/exec.js';
import { LABEL_TASK, LABEL_WORKER } from '../../src/engine/labels.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import type { Engine, RunLimits, RunSpec } from '../../src/engine/types.js';
import { WorkerError } from '../../src/errors.js';
import { busyboxContext, busyboxImage } from './busybox-context.js';
import { defineHardeningTests } from './conformance-hardening.js';
import { filesOfTar, readableOf, tarOf } from './engine-tar.js';
import {
  type EngineVariant,
  requireEngines,
  unavailableUnlessRequired,
} from './engine-variants.js';

const MIB = 1024 ** 2;
const TEST_LIMITS: RunLimits = {
  ...DEFAULT_LIMITS,
  memoryBytes: 256 * MIB,
  tmpfsBytes: 64 * MIB,
  // Not the engines' 64m default, so a lost --shm-size shows.
  shmBytes: 32 * MIB,
};

/** The engine layer's conformance suite: the same promises, proven by real containers, on every engine. */
export function defineConformanceSuite(variant: EngineVariant): void {
  describe(`engine conformance: ${variant.id}`, () => {
    const worker = `test-${variant.id}-${randomBytes(4).toString('hex')}`;
    const labels = { [LABEL_WORKER]: worker };
    let engine: Engine | undefined;
    let image = '';

    beforeAll(async () => {
      if (unavailableUnlessRequired(variant)) return;
      try {
        engine = await createEngine(variant.options);
      } catch (error) {
        if (requireEngines) throw error;
        return;
      }
      image = await busyboxImage(engine, labels);
    });

    afterAll(async () => {
      await engine?.removeByLabels(labels);
    });

    const ready = (ctx: TestContext): Engine => {
      if (!engine) ctx.skip();
      return engine as Engine;
    };

    const run = (e: Engine, script: string, extra: Partial<RunSpec> = {}) =>
      e.run({
        image,
        command: ['sh', '-c', script],
        mounts: [],
        labels,
        limits: TEST_LIMITS,
        timeoutMs: 60_000,
        logTailLines: 200,
        logTailBytes: 64 * 1024,
        ...extra,
      });

    defineHardeningTests({ ready, run, labels, limits: TEST_LIMITS });

    it('reports a command the image lacks as a failed run, not as an engine error', async (ctx) => {
      const e = ready(ctx);
      // The init process starts and cannot run the command: the submission is at fault.
      const result = await run(e, '', { command: ['/no/such/command'] });
      expect(result.exitCode).not.toBe(0);
      expect(result).toMatchObject({ oomKilled: false, timedOut: false, cancelled: false });
    });

    it('kills a process that allocates beyond the memory limit and says OOM (or reports that it cannot)', async (ctx) => {
      const e = ready(ctx);
      if ((e.info.unenforcedLimits ?? []).includes('memory')) {
        expect(e.info.rootless && e.info.cgroupVersion === 1).toBe(true);
        return;
      }
      // podman's conmon drops an `oom` file in the CLI's working folder on an OOM kill:
      // never in the folder the worker was started from.
      const stray = join(process.cwd(), 'oom');
      rmSync(stray, { force: true });
      const result = await run(
        e,
        'echo started; exec dd if=/dev/zero of=/dev/null bs=200M count=1',
        {
          limits: { ...TEST_LIMITS, memoryBytes: 48 * MIB },
        },
      );
      expect(result.exitCode).toBe(137);
      expect(result.oomKilled).toBe(true);
      expect(result.killedFromOutside).toBe(false);
      expect(result.timedOut).toBe(false);
      expect(existsSync(stray)).toBe(false);
    });

    it('tells a container killed from outside the worker from one out of memory', async (ctx) => {
      const e = ready(ctx);
      const task = `outside-${randomBytes(4).toString('hex')}`;
      const running = run(e, 'echo started; sleep 600', {
        labels: { ...labels, [LABEL_TASK]: task },
      });
      const call = { timeoutMs: 30_000 };
      const find = ['ps', '--quiet', '--filter', `label=${LABEL_TASK}=${task}`];
      let id = '';
      while (!id) {
        id = (await execEngine(e.info, [...find, '--filter', 'status=running'], call)).trim();
        if (!id) await new Promise((r) => setTimeout(r, 200));
      }
      await execEngine(e.info, ['kill', id], call);
      const result = await running;
      // A remote podman on cgroup v1 keeps no record of an OOM the worker can read (conmon
      // runs on its host): a SIGKILL under a memory limit is taken for one, as documented.
      const info = e.info;
      const unrecorded =
        info.name === 'podman' &&
        info.engineHost !== undefined &&
        info.cgroupVersion === 1 &&
        !(info.unenforcedLimits ?? []).includes('memory');
      expect(result).toMatchObject({
        exitCode: 137,
        oomKilled: unrecorded,
        killedFromOutside: !unrecorded,
        timedOut: false,
        cancelled: false,
      });
    });

    it('stops a fork loop at the pids limit (or, rootless on cgroup v1, at the nproc ulimit)', async (ctx) => {
      const e = ready(ctx);
      const unenforced = (e.info.unenforcedLimits ?? []).includes('pids');
      // nproc counts every process of the uid on the host: rootless maps it to a private uid.
      const limits = unenforced ? { ...TEST_LIMITS, nproc: 32 } : { ...TEST_LIMITS, pidsLimit: 32 };
      const loop =
        'i=0; while [ $i -lt 300 ]; do sleep 120 & i=$((i+1)); echo $i > /tmp/count; done; echo all-forked';
      const result = await run(e, `sh -c '${loop}' 2>&1; read n < /tmp/count; echo forked=$n`, {
        limits,
      });
      const forked = Number(/forked=(\d+)/.exec(result.logTail)?.[1]);
      expect(result.logTail).not.toContain('all-forked');
      expect(forked).toBeGreaterThan(5);
      expect(forked).toBeLessThan(32);
    });

    it('kills a container at its deadline and leaves nothing behind', async (ctx) => {
      const e = ready(ctx);
      const task = `deadline-${randomBytes(4).toString('hex')}`;
      const result = await run(e, 'sleep 600', {
        timeoutMs: 2_000,
        labels: { ...labels, [LABEL_TASK]: task },
      });
      expect(result.timedOut).toBe(true);
      expect(result.oomKilled).toBe(false);
      expect(result.killedFromOutside).toBe(false);
      expect(result.durationMs).toBeLessThan(30_000);
      const left = await execEngine(
        e.info,
        ['ps', '--all', '--quiet', '--filter', `label=${LABEL_TASK}=${task}`],
        {
          timeoutMs: 30_000,
        },
      );
      expect(left.trim()).toBe('');
    });

    it('kills a container when its run is cancelled', async (ctx) => {
      const e = ready(ctx);
      const controller = new AbortController();
      const running = run(e, 'sleep 600', { signal: controller.signal });
      setTimeout(() => controller.abort(), 1_000);
      const result = await running;
      expect(result.cancelled).toBe(true);
      expect(result.timedOut).toBe(false);
      expect(result.killedFromOutside).toBe(false);
    });

    it('streams every log line and keeps only a bounded tail', async (ctx) => {
      const e = ready(ctx);
      const seen: string[] = [];
      const result = await run(
        e,
        'i=1; while [ $i -le 500 ]; do echo line-$i; i=$((i+1)); done; echo oops >&2',
        {
          logTailLines: 10,
          onLogLine: (line) => seen.push(line),
        },
      );
      expect(seen.filter((l) => l.startsWith('line-'))).toHaveLength(500);
      expect(seen).toContain('oops');
      const tail = result.logTail.split('\n');
      expect(tail.length).toBeLessThanOrEqual(10);
      expect(tail).toContain('line-500');
    });

    it('shows log lines while the container still runs, each line once, in order', async (ctx) => {
      const e = ready(ctx);
      const seen: { line: string; at: number }[] = [];
      const script =
        'echo early; sleep 4; i=1; while [ $i -le 200 ]; do echo late-$i; i=$((i+1)); done';
      const result = await run(e, script, {
        onLogLine: (line) => seen.push({ line, at: Date.now() }),
      });
      const ended = Date.now();
      expect(result.exitCode).toBe(0);
      expect(seen.map((s) => s.line)).toEqual([
        'early',
        ...Array.from({ length: 200 }, (_, i) => `late-${i + 1}`),
      ]);
      // "early" came before the 4 s sleep was over, not when the run ended.
      expect(ended - (seen[0]?.at ?? ended)).toBeGreaterThan(2000);
    });

    it('round-trips files through a volume byte for byte, and a non-root user can write into it', async (ctx) => {
      const e = ready(ctx);
      const random = randomBytes(3 * MIB + 17);
      const volume = await e.createVolume(labels);
      const owner = { uid: 1000, gid: 1000 };
      await e.importVolume(
        volume,
        readableOf(
          await tarOf([
            // A root entry as `tar -C dir -cf - .` writes it, owned by root: the volume root must stay writable.
            { name: './' },
            { name: 'sub', ...owner },
            { name: 'sub/random.bin', content: random, ...owner },
            { name: 'start.txt', content: 'from the worker\n', ...owner },
          ]),
        ),
      );
      const result = await run(
        e,
        'cat /data/start.txt && echo written > /data/new.txt && echo more >> /data/start.txt && mkdir /data/out && sha256sum /data/sub/random.bin',
        { mounts: [{ volume, target: '/data' }] },
      );
      expect(result.logTail).toContain('from the worker');
      expect(result.exitCode).toBe(0);
      const files = await filesOfTar(e.exportVolume(volume));
      expect(files.get('sub/random.bin')?.equals(random)).toBe(true);
      expect(files.get('new.txt')?.toString()).toBe('written\n');
      expect(files.get('start.txt')?.toString()).toBe('from the worker\nmore\n');
    });

    it('lets a non-root user write into a new empty volume', async (ctx) => {
      const e = ready(ctx);
      const volume = await e.createVolume(labels);
      const result = await run(e, 'echo out > /out/pred.txt', {
        mounts: [{ volume, target: '/out' }],
      });
      expect(result.exitCode).toBe(0);
      const files = await filesOfTar(e.exportVolume(volume));
      expect(files.get('pred.txt')?.toString()).toBe('out\n');
    });

    it('refuses to run on a volume removed before its container was created: nothing re-created', async (ctx) => {
      const e = ready(ctx);
      const task = { ...labels, [LABEL_TASK]: `gone-${randomBytes(4).toString('hex')}` };
      const volume = await e.createVolume(task);
      await execEngine(e.info, ['volume', 'rm', volume], { timeoutMs: 30_000 });
      const failure = await run(e, 'echo ran > /data/x', {
        labels: task,
        mounts: [{ volume, target: '/data' }],
      }).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(WorkerError);
      expect(failure).toMatchObject({ code: 'ENGINE_FAILED', retryable: true });
      expect((failure as Error).message).toContain(`volume ${volume} no longer exists`);
      // Neither the empty volume the engine re-created nor the container is left.
      expect(await volumeExists(e, volume)).toBe(false);
      expect(await e.removeByLabels(task)).toEqual({ containers: [], volumes: [] });
      // Reading it back through a helper container is refused the same way.
      const reread = await filesOfTar(e.exportVolume(volume)).catch((error: unknown) => error);
      expect(reread).toMatchObject({ code: 'ENGINE_FAILED', retryable: true });
      expect(await volumeExists(e, volume)).toBe(false);
    });

    /**
     * Asked of this one volume: listing all of them fails now and then while the tests
     * beside this one remove theirs.
     */
    const volumeExists = async (e: Engine, volume: string) =>
      (await execEngineRaw(e.info, ['volume', 'inspect', volume], { timeoutMs: 30_000 }))
        .exitCode === 0;

    /** A created, never started container that mounts the volume; its name. */
    const createOrphan = async (e: Engine, volume: string, carrying: Record<string, string>) => {
      const name = `cw-orphan-${randomBytes(4).toString('hex')}`;
      const spec: RunSpec = {
        image,
        command: ['true'],
        mounts: [{ volume, target: '/data' }],
        labels: carrying,
        limits: TEST_LIMITS,
        timeoutMs: 10_000,
        logTailLines: 1,
        logTailBytes: 1024,
      };
      await execEngine(e.info, createArgs(e.info, name, spec), { timeoutMs: 30_000 });
      return name;
    };

    it('prepares several runs with one volume check: started in turn, or refused together when a volume went', async (ctx) => {
      const e = ready(ctx);
      const task = { ...labels, [LABEL_TASK]: `prepared-${randomBytes(4).toString('hex')}` };
      const spec = (script: string, volume: string): RunSpec => ({
        image,
        command: ['sh', '-c', script],
        mounts: [{ volume, target: '/data' }],
        labels: task,
        limits: TEST_LIMITS,
        timeoutMs: 60_000,
        logTailLines: 20,
        logTailBytes: 4096,
      });
      const shared = await e.createVolume(task);
      const [write, read] = await e.prepareRuns([
        spec('echo first > /data/x', shared),
        spec('cat /data/x', shared),
      ]);
      expect(await write?.start()).toMatchObject({ exitCode: 0 });
      expect(await read?.start()).toMatchObject({ exitCode: 0, logTail: 'first' });

      const gone = await e.createVolume(task);
      await execEngine(e.info, ['volume', 'rm', gone], { timeoutMs: 30_000 });
      const failure = await e
        .prepareRuns([spec('true', shared), spec('echo ran > /data/x', gone)])
        .catch((error: unknown) => error);
      expect(failure).toMatchObject({ code: 'ENGINE_FAILED', retryable: true });
      expect((failure as Error).message).toContain(`volume ${gone} no longer exists`);
      // Neither container is left, nor the empty volume the engine re-created.
      expect(await e.removeByLabels(task)).toEqual({ containers: [], volumes: [shared] });
    });

    it('finds and removes every container and volume by label', async (ctx) => {
      const e = ready(ctx);
      const task = { ...labels, [LABEL_TASK]: `cleanup-${randomBytes(4).toString('hex')}` };
      const volume = await e.createVolume(task);
      // A container left behind by a worker that crashed: created with the task's labels.
      await createOrphan(e, volume, task);
      const removed = await e.removeByLabels(task);
      expect(removed.volumes).toEqual([volume]);
      expect(removed.containers).toHaveLength(1);
      expect(await e.removeByLabels(task)).toEqual({ containers: [], volumes: [] });
    });

    it('removes by one label the containers and the volume they mount', async (ctx) => {
      const e = ready(ctx);
      const one = { [LABEL_TASK]: `one-${randomBytes(4).toString('hex')}` };
      const volume = await e.createVolume(one);
      await createOrphan(e, volume, one);
      await createOrphan(e, volume, one);
      const removed = await e.removeByLabels(one);
      expect(removed.volumes).toEqual([volume]);
      expect(removed.containers).toHaveLength(2);
      const ps = await execEngine(
        e.info,
        ['ps', '--all', '--quiet', '--filter', `label=${LABEL_TASK}=${one[LABEL_TASK]}`],
        { timeoutMs: 30_000 },
      );
      expect(ps.trim()).toBe('');
      expect(await volumeExists(e, volume)).toBe(false);
      expect(await e.removeByLabels(one)).toEqual({ containers: [], volumes: [] });
    });

    it('builds a context once: the second build of the same bytes is a cache hit', async (ctx) => {
      const e = ready(ctx);
      const context = await busyboxContext({
        files: { 'note.txt': randomBytes(8).toString('hex') },
      });
      const first = await e.buildImage({
        role: 'conformance',
        context: readableOf(context),
        labels,
      });
      const second = await e.buildImage({
        role: 'conformance',
        context: readableOf(context),
        labels,
      });
      expect(first.cached).toBe(false);
      expect(second).toMatchObject({ cached: true, image: first.image, digest: first.digest });
      expect(first.image).toBe(`localhost/compute-worker/conformance:${first.digest}`);
      await execEngine(e.info, ['rmi', first.image], { timeoutMs: 30_000 });
    });

    it('rejects a Containerfile that asks for the host network', async (ctx) => {
      const e = ready(ctx);
      const context = await busyboxContext({
        extraLines: ['ARG NET=host', 'RUN --network=$NET ["/bin/busybox","true"]'],
      });
      const error = await e
        .buildImage({ role: 'conformance', context: readableOf(context), labels })
        .catch((x) => x);
      expect(error).toBeInstanceOf(WorkerError);
      expect(error).toMatchObject({ code: 'BUILD_CONTEXT_REJECTED', retryable: false });
    });

    it('reports a failing build as BUILD_FAILED with its output', async (ctx) => {
      const e = ready(ctx);
      const context = await busyboxContext({
        extraLines: [`RUN ["/bin/sh","-c","echo broken-step-${variant.id}; exit 3"]`],
      });
      const error = await e
        .buildImage({ role: 'conformance', context: readableOf(context), labels })
        .catch((x) => x);
      expect(error).toBeInstanceOf(WorkerError);
      expect(error).toMatchObject({ code: 'BUILD_FAILED', retryable: false });
      expect(error.detail).toContain(`broken-step-${variant.id}`);
    });

    // podman 4.3 leaves a stopped build's RUN process running (and its working container):
    // the step sleeps only 45 s so nothing lingers for long.
    it('stops a build that runs past the build timeout', async (ctx) => {
      const e = ready(ctx);
      const impatient = engineFor(e.info, { ...variant.options, buildTimeoutMs: 3_000 });
      const context = await busyboxContext({
        extraLines: [`RUN ["/bin/sh","-c","echo ${randomBytes(4).toString('hex')}; sleep 45"]`],
      });
      const started = Date.now();
      const error = await impatient
        .buildImage({ role: 'conformance', context: readableOf(context), labels })
        .catch((x) => x);
      expect(error).toMatchObject({ code: 'BUILD_FAILED', retryable: false });
      expect(error.message).toMatch(/did not finish within 3000 ms/);
      expect(Date.now() - started).toBeLessThan(60_000);
    });

    it("passes doctor's probe: built and run hardened, nothing failing", async (ctx) => {
      const e = ready(ctx);
      const checks = await probeEngine(e, { limits: TEST_LIMITS });
      expect(checks.filter((c) => c.status === 'fail')).toEqual([]);
      expect(checks.map((c) => c.name)).toEqual(
        expect.arrayContaining([
          'engine',
          'build',
          'run',
          'network',
          'capabilities',
          'no-new-privileges',
          'seccomp',
          'read-only-root',
          'user',
          'tmp',
          'read-only-inputs',
        ]),
      );
      const limits = checks.find((c) => c.name === 'resource-limits');
      expect(limits?.status).toBe((e.info.unenforcedLimits ?? []).length > 0 ? 'warn' : 'pass');
    });
  });
}
