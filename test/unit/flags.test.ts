import { Parser } from '@oclif/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runFlags, taskFlags } from '../../src/cli/flags.js';
import { runLimits } from '../../src/cli/settings.js';
import { DEFAULT_LIMITS } from '../../src/engine/limits.js';
import { DEFAULT_RETRY_POLICY } from '../../src/tasks/outcome.js';

// Defaults are written once: the engine's limits and the retry policy are the flags'
// defaults, and --help shows a text that parses back to the very value a flag defaults to.

interface FlagShape {
  default?: unknown;
  defaultHelp?: unknown;
  parse: (input: string, context: unknown, options: unknown) => Promise<unknown>;
}

const allFlags = Object.entries({ ...taskFlags, ...runFlags }) as [string, FlagShape][];

describe('flag defaults', () => {
  // A variable of the test's environment would be taken for a flag.
  const saved: Record<string, string | undefined> = {};
  beforeEach(() => {
    for (const name of Object.keys(process.env).filter((n) => n.startsWith('COMPUTE_WORKER_'))) {
      saved[name] = process.env[name];
      delete process.env[name];
    }
  });
  afterEach(() => {
    Object.assign(process.env, saved);
  });

  it("without flags, a container gets the engine's default limits", async () => {
    const { flags } = await Parser.parse([], { flags: taskFlags });
    expect(runLimits(flags)).toEqual(DEFAULT_LIMITS);
  });

  it("without flags, the daemon retries by the tasks' default policy", async () => {
    const { flags } = await Parser.parse([], { flags: runFlags });
    expect({
      maxAttempts: flags['max-attempts'],
      baseDelayMs: flags['retry-delay'],
      maxDelayMs: flags['retry-max-delay'],
    }).toEqual(DEFAULT_RETRY_POLICY);
  });

  it('a flag given its default as --help shows it gets the same value', async () => {
    const withDefaults = allFlags.filter(([, flag]) => flag.default !== undefined);
    expect(withDefaults.map(([name]) => name)).toEqual(
      expect.arrayContaining(['memory', 'cpus', 'pids-limit', 'learn-timeout', 'retry-delay']),
    );
    for (const [name, flag] of withDefaults) {
      // As oclif's help computes the text it shows after "default:".
      const shown =
        typeof flag.defaultHelp === 'function'
          ? await flag.defaultHelp({ flags: {}, options: flag })
          : flag.default;
      expect(typeof shown, name).not.toBe('undefined');
      const { flags } = await Parser.parse([`--${name}`, String(shown)], {
        flags: { [name]: flag } as never,
      });
      expect(flags[name], `--${name} ${shown}`).toEqual(flag.default);
    }
  });

  it('--help shows the limits in the units they are written in', async () => {
    const help = async (name: keyof typeof taskFlags) => {
      const flag = taskFlags[name] as FlagShape;
      return typeof flag.defaultHelp === 'function'
        ? await flag.defaultHelp({ flags: {}, options: flag })
        : String(flag.default);
    };
    expect(await help('memory')).toBe('4g');
    expect(await help('shm-size')).toBe('1g');
    expect(await help('learn-timeout')).toBe('20m0s');
    expect(await help('cpus')).toBe(String(DEFAULT_LIMITS.cpus));
  });
});
