import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.js';
import { faultOf } from '../../src/tasks/outcome.js';
import { busyboxContext } from '../support/busybox-context.js';
import { requireEngines } from '../support/engine-variants.js';
import {
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

    async function expectTaskFault(context: Buffer, code: ErrorCode, message: RegExp) {
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
      expect(error?.describe()).not.toMatch(/compute-worker-|cw-build-|cw-task-test-|\/tmp\//);
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
