import { fileURLToPath } from 'node:url';
import { Config } from '@oclif/core';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));

describe('compute-worker --version', () => {
  it('prints what oclif would, without loading it', async () => {
    const result = await execa(`${root}bin/run.js`, ['--version'], { reject: false });
    expect(result.exitCode).toBe(0);
    expect(result.stderr).toBe('');
    const config = await Config.load(root);
    expect(result.stdout).toBe(config.userAgent);
    expect(result.stdout).toMatch(/^compute-worker\/\d+\.\d+\.\d+ linux-x64 node-v\d+/);
  });

  it('leaves --version among other arguments to oclif', async () => {
    const result = await execa(`${root}bin/run.js`, ['doctor', '--version'], { reject: false });
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/unknown flag --version/);
  });
});
