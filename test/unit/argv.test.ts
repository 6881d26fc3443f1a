import { describe, expect, it } from 'vitest';
import {
  defaultToRun,
  lastValueWins,
  normalizeGoStyleArgs,
  prepareArgv,
} from '../../src/cli/argv.js';
import { booleanFlagNames, knownFlagNames, repeatableFlagNames } from '../../src/cli/flags.js';

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

const shapes = {
  known: knownFlagNames,
  repeatable: repeatableFlagNames,
  boolean: booleanFlagNames,
};

describe('the flag shapes', () => {
  it('knows which flags repeat and which take no value', () => {
    expect([...repeatableFlagNames].sort()).toEqual(['nsqd-tcp-addresses', 'nsqlookupd-urls']);
    expect(booleanFlagNames.has('json')).toBe(true);
    expect(booleanFlagNames.has('learn-parallelism')).toBe(false);
  });
});

describe('lastValueWins', () => {
  it('keeps the last value of a single-value flag, in either spelling, with its value', () => {
    expect(
      lastValueWins(
        [
          'run',
          '--learn-parallelism',
          '1',
          '--memory=2g',
          '--learn-parallelism=3',
          '--memory',
          '8g',
          '--learn-parallelism',
          '2',
        ],
        shapes,
      ),
    ).toEqual(['run', '--memory', '8g', '--learn-parallelism', '2']);
  });

  it('keeps every value of a repeatable flag, in order', () => {
    expect(
      lastValueWins(
        ['--nsqlookupd-urls', 'a:4161', '--cpus', '1', '--nsqlookupd-urls=b:4161', '--cpus', '2'],
        shapes,
      ),
    ).toEqual(['--nsqlookupd-urls', 'a:4161', '--nsqlookupd-urls=b:4161', '--cpus', '2']);
  });

  it('reads the next word as the value, even one that looks like a flag, as Go does', () => {
    expect(
      lastValueWins(
        ['--storage-password', '--cpus', '--storage-password', 'second', '--cpus', '3'],
        shapes,
      ),
    ).toEqual(['--storage-password', 'second', '--cpus', '3']);
  });

  it('leaves booleans without a value, unknown flags, arguments and all after -- alone', () => {
    expect(
      lastValueWins(
        ['task', 'exec', 'f.json', '--json', '--unknown', 'x', '--unknown', 'y', '--json'],
        shapes,
      ),
    ).toEqual(['task', 'exec', 'f.json', '--unknown', 'x', '--unknown', 'y', '--json']);
    expect(lastValueWins(['--cpus', '1', '--', '--cpus', '2', '--cpus', '3'], shapes)).toEqual([
      '--cpus',
      '1',
      '--',
      '--cpus',
      '2',
      '--cpus',
      '3',
    ]);
  });

  it('keeps a flag given last without its value, for oclif to say that it lacks one', () => {
    expect(lastValueWins(['--cpus', '1', '--cpus'], shapes)).toEqual(['--cpus']);
  });
});

describe('defaultToRun', () => {
  it('runs the daemon when the command line starts with a flag', () => {
    expect(defaultToRun(['--nsqlookupd-urls', 'h:4161'])).toEqual([
      'run',
      '--nsqlookupd-urls',
      'h:4161',
    ]);
    expect(defaultToRun(['--unknown'])).toEqual(['run', '--unknown']);
  });

  it('leaves commands, help, version and an empty command line alone', () => {
    for (const argv of [[], ['run', '--cpus', '1'], ['task', 'exec', '-'], ['--help'], ['-h']])
      expect(defaultToRun(argv)).toEqual(argv);
    expect(defaultToRun(['--version'])).toEqual(['--version']);
  });
});

describe('prepareArgv', () => {
  it("reads the original worker's command line: single dashes, no command, repeats", () => {
    expect(
      prepareArgv(
        [
          '-nsqlookupd-urls',
          'h1:4161',
          '-learn-parallelism',
          '1',
          '-nsqlookupd-urls=h2:4161',
          '-learn-parallelism',
          '2',
          '-learn-timeout',
          '20m0s',
        ],
        shapes,
      ),
    ).toEqual([
      'run',
      '--nsqlookupd-urls',
      'h1:4161',
      '--nsqlookupd-urls=h2:4161',
      '--learn-parallelism',
      '2',
      '--learn-timeout',
      '20m0s',
    ]);
  });
});
