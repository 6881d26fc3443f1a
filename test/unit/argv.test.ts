import { describe, expect, it } from 'vitest';
import { normalizeGoStyleArgs } from '../../src/cli/argv.js';

const known = new Set(['learn-timeout', 'nsqlookupd-urls', 'storage-password']);

describe('normalizeGoStyleArgs', () => {
  it('turns the seed single-dash flags into double-dash ones', () => {
    expect(
      normalizeGoStyleArgs(['run', '-learn-timeout', '20m0s', '-nsqlookupd-urls=h:4161'], known),
    ).toEqual(['run', '--learn-timeout', '20m0s', '--nsqlookupd-urls=h:4161']);
  });

  it('leaves values, short flags, unknown words and arguments after -- alone', () => {
    expect(
      normalizeGoStyleArgs(
        ['--storage-password', '-storage-password', '-h', '-unknown-flag', '--', '-learn-timeout'],
        known,
      ),
    ).toEqual([
      '--storage-password',
      '--storage-password',
      '-h',
      '-unknown-flag',
      '--',
      '-learn-timeout',
    ]);
  });
});
