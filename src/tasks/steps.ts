import { STEP_ORDER, type StepName, type StepTiming, type TaskRun } from './context.js';

/**
 * Runs the steps of one task, timing each and telling the watcher. Some steps run at once
 * (the builds while the data is staged), so a failure remembers the step it came from.
 */
export class StepRecorder {
  readonly timings: StepTiming[] = [];
  private readonly running = new Set<StepName>();
  private readonly failedIn = new WeakMap<object, StepName>();

  constructor(private readonly run: TaskRun) {}

  async step<T>(step: StepName, work: () => Promise<T>, note?: (value: T) => string): Promise<T> {
    this.run.signal.throwIfAborted();
    this.running.add(step);
    this.run.onEvent?.({ type: 'step-start', step });
    const started = performance.now();
    let value: T;
    try {
      value = await work();
    } catch (error) {
      if (typeof error === 'object' && error !== null && !this.failedIn.has(error))
        this.failedIn.set(error, step);
      throw error;
    } finally {
      this.running.delete(step);
    }
    const ms = Math.round(performance.now() - started);
    const text = note?.(value);
    // In SPEC order, whichever of the steps that ran at once ended first.
    const at = this.timings.findIndex((t) => rank(t.step) > rank(step));
    this.timings.splice(at === -1 ? this.timings.length : at, 0, {
      step,
      ms,
      ...(text ? { note: text } : {}),
    });
    this.run.onEvent?.({ type: 'step-end', step, ms, ...(text ? { note: text } : {}) });
    return value;
  }

  /** The step an error came from; else the one step running, if only one was. */
  stepOf(error: unknown): StepName | undefined {
    const step = typeof error === 'object' && error !== null ? this.failedIn.get(error) : undefined;
    if (step) return step;
    return this.running.size === 1 ? [...this.running][0] : undefined;
  }
}

function rank(step: StepName): number {
  return STEP_ORDER.indexOf(step);
}
