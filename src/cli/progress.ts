import { formatDuration } from '../config/duration.js';
import type { TaskEvent } from '../tasks/context.js';
import type { TaskReport } from '../tasks/run-task.js';

type Write = (text: string) => void;

/** Renders a task's events as lines a person can follow: steps, bytes staged, container output. */
export function progressPrinter(write: Write): (event: TaskEvent) => void {
  return (event) => {
    switch (event.type) {
      case 'step-start':
        write(`> ${event.step}\n`);
        break;
      case 'step-end':
        write(
          `  ${event.step} done in ${formatDuration(event.ms)}${event.note ? `: ${event.note}` : ''}\n`,
        );
        break;
      case 'staged':
        write(`  staged ${event.name} (${event.bytes} bytes)\n`);
        break;
      case 'log':
        write(`  | ${event.line}\n`);
        break;
      case 'warning':
        write(`  warning: ${event.message}\n`);
        break;
    }
  };
}

/** The closing lines of a task on a terminal. */
export function describeReport(report: TaskReport): string {
  const head = `${report.kind} task ${report.uuid}${report.gpus ? ` (GPUs ${report.gpus.join(', ')})` : ''}`;
  if (report.status === 'done') {
    if (report.performance) {
      const perf = report.performance;
      const lines = [`${head} done: performance ${perf.perf}`];
      for (const [uuid, value] of Object.entries(perf.test_perf))
        lines.push(`  test ${uuid}: ${value}`);
      for (const [uuid, value] of Object.entries(perf.train_perf))
        lines.push(`  train ${uuid}: ${value}`);
      lines.push(`  model uploaded as ${report.modelUuid}`);
      return `${lines.join('\n')}\n`;
    }
    return `${head} done: prediction uploaded as ${report.predictionUuid}\n`;
  }
  const where = report.failedStep ? ` at step ${report.failedStep}` : '';
  return `${head} failed${where}: ${report.error?.describe() ?? 'unknown error'}\n`;
}

/** The stable --json result object. */
export function reportJson(
  report: TaskReport,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    status: report.status,
    kind: report.kind,
    uuid: report.uuid,
    steps: report.steps,
    ...(report.gpus ? { gpus: report.gpus } : {}),
    ...(report.performance ? { performance: report.performance } : {}),
    ...(report.modelUuid && report.status === 'done' ? { model: report.modelUuid } : {}),
    ...(report.predictionUuid ? { prediction: report.predictionUuid } : {}),
    ...(report.failedStep ? { failedStep: report.failedStep } : {}),
    ...(report.error ? { error: report.error.toJSON() } : {}),
    ...extra,
  };
}
