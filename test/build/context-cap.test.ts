import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/container-engine.js';
import { WorkerError } from '../../src/errors.js';
import { faultOf } from '../../src/tasks/outcome.js';
import { readableOf } from '../support/engine-tar.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const MIB = 1024 ** 2;
const CAP = 50 * MIB;

/** A .tar.gz of `count` files of `bytes` zeros each: about a thousandth of that compressed. */
async function zerosTarGz(count: number, bytes: number): Promise<Buffer> {
  const pack = tar.pack();
  const gzip = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gzip.on('data', (chunk: Buffer) => out.push(chunk));
  const ended = once(gzip, 'end');
  pack.pipe(gzip);
  const zeros = Buffer.alloc(MIB);
  for (let i = 0; i < count; i++) {
    const entry = pack.entry({ name: `zeros-${i}`, size: bytes, mode: 0o644 });
    for (let left = bytes; left > 0; left -= zeros.length) {
      if (!entry.write(zeros.subarray(0, Math.min(left, zeros.length)))) await once(entry, 'drain');
    }
    (entry as unknown as Writable).end();
  }
  pack.finalize();
  await ended;
  return Buffer.concat(out);
}

const variant = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(variant);

// A context is unpacked under --max-context-size, each entry counted from its header before
// its body is written: a gzip bomb is refused, not unpacked, and what was unpacked is gone.
describe.skipIf(why)('the build context cap (--max-context-size)', { timeout: 300_000 }, () => {
  const workDir = mkdtempSync(join(tmpdir(), 'cw-context-cap-'));
  afterAll(() => rmSync(workDir, { recursive: true, force: true }));

  async function refusal(context: Buffer): Promise<WorkerError> {
    const engine = await createEngine({ ...variant.options, workDir, maxContextBytes: CAP });
    const error = await engine
      .buildImage({ role: 'submission', context: readableOf(context), labels: {} })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(WorkerError);
    return error as WorkerError;
  }

  it('refuses a 1 GiB file of zeros in a small .tar.gz, the task fault, leaving nothing', async () => {
    const bomb = await zerosTarGz(1, 1024 * MIB);
    expect(bomb.length).toBeLessThan(8 * MIB);
    const error = await refusal(bomb);
    expect(error.code).toBe('BUILD_CONTEXT_REJECTED');
    expect(error.message).toContain('--max-context-size (50m)');
    expect(faultOf(error)).toBe('task');
    expect(error.describe()).not.toContain(workDir);
    expect(await readdir(workDir)).toEqual([]);
  });

  it('refuses files that pass one by one but not together, removing what was unpacked', async () => {
    const error = await refusal(await zerosTarGz(8, 10 * MIB));
    expect(error.code).toBe('BUILD_CONTEXT_REJECTED');
    expect(error.message).toMatch(/--max-context-size \(50m\).*zeros-5/s);
    expect(await readdir(workDir)).toEqual([]);
  });
});
