import { defineConfig } from 'vitest/config';

// Container tests wait on the engine part of the time, so one worker more than the
// 2 cores of the CI machine keeps them busy; with more, every engine call and build
// slows down (the cores are saturated, and builds share one build user's storage).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 3,
    // On the saturated CI machine a daemon test with tasks takes 3 to 10 times its time alone.
    testTimeout: 240_000,
    hookTimeout: 300_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
