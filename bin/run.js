#!/usr/bin/env node
import { execute } from '@oclif/core';
import { prepareArgv } from '../dist/src/cli/argv.js';
import { booleanFlagNames, knownFlagNames, repeatableFlagNames } from '../dist/src/cli/flags.js';

// Command lines written for the original worker work unchanged: single-dash flags, no
// subcommand (the daemon), and the last value of a flag given twice.
await execute({
  dir: import.meta.url,
  args: prepareArgv(process.argv.slice(2), {
    known: knownFlagNames,
    repeatable: repeatableFlagNames,
    boolean: booleanFlagNames,
  }),
});
