import { Parser } from '@oclif/core';
import { afterEach, describe, expect, it } from 'vitest';
import { engineFlags } from '../../src/cli/flags.js';
import { engineOptions, type TaskFlagValues } from '../../src/cli/settings.js';

const ENV = 'COMPUTE_WORKER_WORKFLOW_BUILD_POLICY';

async function policyOf(argv: string[]) {
  const { flags } = await Parser.parse(argv, { flags: engineFlags });
  return engineOptions(flags as unknown as TaskFlagValues).workflowBuildPolicy;
}

describe('--workflow-build-policy', () => {
  afterEach(() => {
    delete process.env[ENV];
  });

  it('is trusted unless told otherwise', async () => {
    expect(await policyOf([])).toBe('trusted');
  });

  it('reaches the engine options from the flag and from the environment', async () => {
    expect(await policyOf(['--workflow-build-policy', 'strict'])).toBe('strict');
    process.env[ENV] = 'strict';
    expect(await policyOf([])).toBe('strict');
  });

  it('refuses another value', async () => {
    await expect(policyOf(['--workflow-build-policy', 'open'])).rejects.toThrow(/trusted, strict/);
  });
});
