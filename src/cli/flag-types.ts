import { Flags } from '@oclif/core';
import { parseDuration } from '../config/duration.js';
import { parseSize } from '../config/size.js';

/** A Go-style duration flag (20m, 1h30m, 15m0s), parsed to milliseconds. */
export const durationFlag = Flags.custom<number>({
  parse: async (input) => parseDuration(input),
  helpValue: '<duration>',
});

/** A size flag in the engines' syntax (4g, 512m), parsed to bytes. */
export const sizeFlag = Flags.custom<number>({
  parse: async (input) => parseSize(input),
  helpValue: '<size>',
});

/** A positive number flag that accepts fractions (cpus: 1.5). */
export const positiveNumberFlag = Flags.custom<number>({
  parse: async (input) => {
    const value = Number(input);
    if (!Number.isFinite(value) || value <= 0)
      throw new Error(`expected a positive number, got "${input}"`);
    return value;
  },
  helpValue: '<number>',
});
