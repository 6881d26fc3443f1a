import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contextTarGz } from '../../src/engine/probe-context.js';
import type { ErrorCode } from '../../src/errors.js';
import { faultOf } from '../../src/tasks/outcome.js';
import { busyboxContext } from '../support/busybox-context.js';
import { requireEngines } from '../support/engine-variants.js';
import {
  doneReports,
  exampleContext,
  exampleData,
  leftovers,
  newIds,
  podmanMissing,
  prebuild,
  runTask,
  startWorld,
  type TaskWorld,
} from '../support/task-fixtures.js';

// A submission's own mistakes are its task's fault (BUILD_CONTEXT_REJECTED for the context,
// CONTAINER_FAILED for an image the engine cannot start as written), told in words that name no path of
// the worker's (its temp folder, its state folder), and a daemon does not retry them.

type Entry = {
  name: string;
  type?: 'file' | 'symlink' | 'directory';
  linkname?: string;
  body?: string;
};

/**
 * An image of COPY lines only, so that a RUN step cannot fail on what it holds: busybox and
 * the usual top folders, but for `replaced` (a name ending in `/` is a folder).
 */
async function copiedImage(replaced: Record<string, string>, lines: string[] = []) {
  const top = ['proc', 'sys', 'dev', 'etc', 'run', 'tmp', 'data'].filter((d) => !(d in replaced));
  const skeleton = Object.fromEntries(top.map((d) => [`skeleton/${d}/`, '']));
  for (const [name, body] of Object.entries(replaced)) skeleton[`skeleton/${name}`] = body;
  const containerfile = ['FROM scratch', 'COPY skeleton/ /', 'COPY busybox /bin/busybox', ...lines];
  return contextTarGz({
    Containerfile: `${[...containerfile, 'ENTRYPOINT ["/bin/busybox", "true"]'].join('\n')}\n`,
    busybox: await readFile('/bin/busybox'),
    ...skeleton,
  });
}

async function tarGzOf(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const { name, type = 'file', linkname, body = '' } of entries) {
    const header = { name, type, linkname, mode: 0o755 };
    if (type === 'file') pack.entry({ ...header, size: Buffer.byteLength(body) }, body);
    else pack.entry(header);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

describe.skipIf(podmanMissing !== undefined && !requireEngines)(
  "a context's own mistakes are the task's fault",
  { timeout: 300_000 },
  () => {
    let world: TaskWorld;
    const ids = newIds('W', 'train', 'test');

    beforeAll(async () => {
      world = await startWorld();
      const problem = await exampleContext('problem');
      world.storage.seed('problem', ids.W, { blob: problem });
      world.storage.seed('data', ids.train, { blob: await exampleData('train-1.csv') });
      world.storage.seed('data', ids.test, { blob: await exampleData('test.csv') });
      await prebuild(await world.env(), [['workflow', problem]]);
    });

    afterAll(() => world?.close());

    /**
     * `reported`: the message as the participant reads it in the report (a string or a matcher). Where the
     * engine's own words (the detail, for the operator) name its store, only the message
     * is checked for the worker's paths.
     */
    async function expectTaskFault(
      context: Buffer,
      code: ErrorCode,
      message: RegExp,
      reported?: unknown,
    ) {
      const { uuid: algo } = newIds('uuid');
      world.storage.seed('algo', algo, { blob: context });
      const env = await world.env();
      const task = {
        ...newIds('uuid', 'model_end'),
        workflow: ids.W,
        algo,
        train_data: [ids.train],
        test_data: [ids.test],
        model_start: null,
        rank: 0,
      };
      const { report } = await runTask(world, env, task);
      const error = report.error;
      expect(report.status).toBe('failed');
      expect(error?.code, error?.describe()).toBe(code);
      expect(error?.message, error?.detail).toMatch(message);
      expect(error && faultOf(error)).toBe('task');
      expect(error?.retryable).toBe(false);
      // No worker path: neither its temp folders nor the task's.
      const workerPaths = /compute-worker-|cw-build-|cw-task-test-|\/tmp\//;
      if (reported === undefined) expect(error?.describe()).not.toMatch(workerPaths);
      else {
        expect(error?.message).not.toMatch(workerPaths);
        const [sent] = doneReports(world, report.uuid);
        expect(sent?.body).toMatchObject({ error: { code, fault: 'task', message: reported } });
      }
      expect(await leftovers(report.uuid, env.tmpDir)).toEqual({
        containers: [],
        volumes: [],
        tmp: [],
      });
    }

    it('a Containerfile that is a dangling link', async () => {
      const context = await tarGzOf([
        { name: 'Containerfile', type: 'symlink', linkname: 'nowhere' },
      ]);
      await expectTaskFault(context, 'BUILD_CONTEXT_REJECTED', /Containerfile is a symbolic link/);
    });

    it('a Containerfile that links to a file of the context', async () => {
      const context = await tarGzOf([
        { name: 'real', body: 'FROM scratch\n' },
        { name: 'Containerfile', type: 'symlink', linkname: 'real' },
      ]);
      await expectTaskFault(context, 'BUILD_CONTEXT_REJECTED', /Containerfile is a symbolic link/);
    });

    it('a Containerfile that is a folder', async () => {
      const context = await tarGzOf([
        { name: 'Containerfile/', type: 'directory' },
        { name: 'Containerfile/x', body: 'x' },
      ]);
      await expectTaskFault(context, 'BUILD_CONTEXT_REJECTED', /Containerfile is a folder/);
    });

    it('an image whose WORKDIR the engine cannot enter', async () => {
      const context = await busyboxContext({ extraLines: ['WORKDIR /proc/self/fd/7'] });
      await expectTaskFault(context, 'CONTAINER_FAILED', /working directory \(WORKDIR\)/);
    });

    it('an image whose WORKDIR is under /sys (read-only in the container)', async () => {
      const context = await busyboxContext({ extraLines: ['WORKDIR /sys/kernel/work'] });
      const reported =
        "The container could not start: the image's working directory (WORKDIR) /sys/kernel/work cannot be made: it is on a read-only filesystem of the container";
      await expectTaskFault(
        context,
        'CONTAINER_FAILED',
        /\(WORKDIR\) \/sys\/kernel\/work/,
        reported,
      );
    });

    it('an image whose /tmp is a file', async () => {
      const context = await copiedImage({ tmp: 'not a folder' });
      const reported = "The container could not start: the image's /tmp is a file, not a folder";
      await expectTaskFault(context, 'CONTAINER_FAILED', /\/tmp is a file/, reported);
    });

    it('an image whose /dev is a file', async () => {
      const context = await copiedImage({ dev: 'not a folder' });
      const reported = "The container could not start: the image's /dev is a file, not a folder";
      await expectTaskFault(context, 'CONTAINER_FAILED', /\/dev is a file/, reported);
    });

    it('an image whose /data is a file', async () => {
      const context = await copiedImage({ data: 'not a folder' });
      // podman copies the image into the task's volumes in no fixed order: one of its folders.
      const reported = expect.stringMatching(
        /^The container could not start: in the image, a folder on the path to \/data\/\S+ is a file$/,
      );
      await expectTaskFault(
        context,
        'CONTAINER_FAILED',
        /a folder on the path to \/data\//,
        reported,
      );
    });

    it('an image whose /data/model is a file', async () => {
      const context = await copiedImage({ 'data/': '', 'data/model': 'not a folder' });
      const reported =
        "The container could not start: the image's /data/model, or a folder above it, is a file, not a folder";
      await expectTaskFault(context, 'CONTAINER_FAILED', /\/data\/model, or a folder/, reported);
    });

    it('an image whose USER does not exist', async () => {
      const context = await busyboxContext({ extraLines: ['USER nosuchuser'] });
      await expectTaskFault(context, 'CONTAINER_FAILED', /exited with code/);
    });

    it('an image whose ENTRYPOINT does not exist', async () => {
      const context = await busyboxContext({ extraLines: ['ENTRYPOINT ["/no/such/program"]'] });
      await expectTaskFault(context, 'CONTAINER_FAILED', /exited with code/);
    });
  },
);
