import { CLIError } from '@oclif/core/errors';
import * as Flags from '@oclif/core/flags';
import { formatDuration, parseDuration } from '../config/duration.js';
import { formatSize, parseSize } from '../config/size.js';

/** A Go-style duration flag (20m, 1h30m, 15m0s), parsed to milliseconds. */
export const durationFlag = Flags.custom<number>({
  parse: async (input) => asUsage(() => parseDuration(input)),
  helpValue: '<duration>',
});

/** A size flag in the engines' syntax (4g, 512m), parsed to bytes. */
export const sizeFlag = Flags.custom<number>({
  parse: async (input) => asUsage(() => parseSize(input)),
  helpValue: '<size>',
});

/** A positive number flag that accepts fractions (cpus: 1.5). */
export const positiveNumberFlag = Flags.custom<number>({
  parse: async (input) => {
    const value = Number(input);
    if (!Number.isFinite(value) || value <= 0)
      throw usageError(`expected a positive number, got "${input}"`);
    return value;
  },
  helpValue: '<number>',
});

/** A size flag's default, shown by --help as the engines write it (4g): written once. */
export function sizeDefault(bytes: number) {
  return { default: bytes, defaultHelp: async () => formatSize(bytes) };
}

/** A duration flag's default, shown by --help as Go prints it (20m0s): written once. */
export function durationDefault(ms: number) {
  return { default: ms, defaultHelp: async () => formatDuration(ms) };
}

/** A bad flag value is a bad command line: exit 2, as for oclif's own flag types. */
function usageError(message: string): CLIError {
  return new CLIError(message, { exit: 2 });
}

export function asUsage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw usageError(error instanceof Error ? error.message : String(error));
  }
}
