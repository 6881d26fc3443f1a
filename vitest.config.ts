import { defineConfig } from 'vitest/config';

// Container tests spend most of their time waiting on the engine, so more
// workers than cores keeps the 2-core CI machine busy without starving it.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 4,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
