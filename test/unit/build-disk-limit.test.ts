import { Parser } from '@oclif/core';
import { describe, expect, it } from 'vitest';
import { engineFlags, limitFlags } from '../../src/cli/flags.js';
import { engineOptions, type TaskFlagValues } from '../../src/cli/settings.js';
import { imageSizeArgs } from '../../src/engine/args.js';

async function buildDiskLimitOf(argv: string[]) {
  const { flags } = await Parser.parse(argv, { flags: { ...engineFlags, ...limitFlags } });
  return engineOptions(flags as unknown as TaskFlagValues).buildDiskLimitBytes;
}

describe("a build's disk limit", () => {
  it('is --disk-limit, 20g unless told otherwise', async () => {
    expect(await buildDiskLimitOf([])).toBe(20 * 1024 ** 3);
    expect(await buildDiskLimitOf(['--disk-limit', '50m'])).toBe(50 * 1024 ** 2);
  });

  it("reads an image's size in bytes", () => {
    expect(imageSizeArgs('i')).toEqual(['image', 'inspect', '--format', '{{.Size}}', 'i']);
  });
});
