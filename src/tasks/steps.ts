import type { StepName, StepTiming, TaskRun } from './context.js';

/** Runs the steps of one task in order, timing each and telling the watcher. */
export class StepRecorder {
  readonly timings: StepTiming[] = [];
  current?: StepName;

  constructor(private readonly run: TaskRun) {}

  async step<T>(step: StepName, work: () => Promise<T>, note?: (value: T) => string): Promise<T> {
    this.run.signal.throwIfAborted();
    this.current = step;
    this.run.onEvent?.({ type: 'step-start', step });
    const started = performance.now();
    const value = await work();
    const ms = Math.round(performance.now() - started);
    const text = note?.(value);
    this.timings.push({ step, ms, ...(text ? { note: text } : {}) });
    this.run.onEvent?.({ type: 'step-end', step, ms, ...(text ? { note: text } : {}) });
    this.current = undefined;
    return value;
  }
}
