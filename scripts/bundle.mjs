// Bundles the compiled commands (dist/commands) and what bin/run.js loads before them into
// dist/bundle: a command then loads a dozen files where it loaded several hundred, which
// takes about 90 ms and 120 ms of CPU off every start of the CLI on the 2-core test
// machine (a `task exec` is one start per task; see docs/benchmark.md). Part of `npm run
// build`, after tsc; dist/src stays as tsc wrote it, for the tests and the health check.
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
await rm(join(root, 'dist/bundle'), { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: [
    'dist/commands/run.js',
    'dist/commands/doctor.js',
    'dist/commands/status.js',
    'dist/commands/task/exec.js',
    'dist/commands/task/logs.js',
    'dist/src/cli/argv.js',
    'dist/src/cli/flags.js',
  ],
  outbase: 'dist',
  outdir: 'dist/bundle',
  // Shared code in chunks of its own, outside the commands folder oclif reads.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20.18',
  sourcemap: true,
  // One oclif for bin/run.js and the commands; native addons (nsqjs's snappy and crc32)
  // and the text log formatter, which src/log.ts loads only when asked, stay packages.
  external: ['@oclif/core', 'pino-pretty', 'snappy', '@node-rs/crc32'],
  // The CommonJS packages inside call require(): an ES module has none of its own.
  banner: {
    js: "import { createRequire as __cwCreateRequire } from 'node:module'; const require = __cwCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
