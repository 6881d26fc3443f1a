#!/usr/bin/env node
import { execute } from '@oclif/core';
import { normalizeGoStyleArgs } from '../dist/src/cli/argv.js';
import { knownFlagNames } from '../dist/src/cli/flags.js';

// Command lines written for the original worker (single-dash flags) work unchanged.
await execute({
  dir: import.meta.url,
  args: normalizeGoStyleArgs(process.argv.slice(2), knownFlagNames),
});
