import { describe, expect, it } from 'vitest';
import { createEngine, engineFor } from '../../src/container-engine.js';
import { WorkerError } from '../../src/errors.js';
import { LOCAL_VARIANTS, unavailableUnlessRequired } from '../support/engine-variants.js';

// The readiness check's question to the engine (/readyz): answered by a working engine,
// an error when the engine cannot answer.

describe.each(LOCAL_VARIANTS)('engine ping: $id', (variant) => {
  it('is answered by the engine, and fails when the engine cannot answer', async (ctx) => {
    if (unavailableUnlessRequired(variant)) ctx.skip();
    const engine = await createEngine(variant.options);
    await expect(engine.ping()).resolves.toBeUndefined();
    const broken = engineFor({ ...engine.info, path: '/bin/false' }, variant.options);
    await expect(broken.ping()).rejects.toBeInstanceOf(WorkerError);
  });
});
