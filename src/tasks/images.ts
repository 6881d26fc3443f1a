import { LABEL_BUILT_BY } from '../engine/labels.js';
import type { TaskEnv, TaskRun } from './context.js';
import type { TaskScope } from './scope.js';
import type { StepRecorder } from './steps.js';
import { settleAll } from './volumes.js';

/**
 * Builds (or finds cached) the workflow and submission images. Images are keyed by the
 * digest of their build context and shared between tasks, so they carry no task labels
 * and outlive the task; they carry the id of the worker that built them, whose image
 * cache bounds them. The task holds its images until it ends, so no trim removes them.
 */
export async function buildImages(
  env: TaskEnv,
  run: TaskRun,
  steps: StepRecorder,
  sources: { workflow?: string; submission: string },
  scope: TaskScope,
): Promise<{ workflow: string; submission: string }> {
  // Both images' existence asked in one engine call, once both contexts are hashed.
  const lookup = env.engine.imageLookup(sources.workflow ? 2 : 1);
  const build = async (role: 'workflow' | 'submission', kind: 'problem' | 'algo', uuid: string) => {
    const step = role === 'workflow' ? 'build-workflow' : 'build-submission';
    const result = await steps.step(
      step,
      async () => {
        const blob = await env.storage.getBlob(kind, uuid, run.signal).catch((error: unknown) => {
          lookup.pass();
          throw error;
        });
        const building = env.engine.buildImage({
          role,
          lookup,
          context: blob.stream,
          labels: { [LABEL_BUILT_BY]: env.workerId },
          signal: run.signal,
          onOutputLine: (line) => run.onEvent?.({ type: 'log', step, line, stream: 'stdout' }),
          onImage: async (image) => {
            const release = await env.imageCache?.hold(image);
            if (release) scope.releases.push(release);
          },
        });
        return env.imageCache ? env.imageCache.building(building) : building;
      },
      (r) => `${r.image}${r.cached ? ' (cached)' : ''}`,
    );
    return result.image;
  };
  // Both at once; a failure of the workflow's build is reported first, as in SPEC order.
  const [workflow, submission] = await settleAll([
    sources.workflow ? build('workflow', 'problem', sources.workflow) : Promise.resolve(''),
    build('submission', 'algo', sources.submission),
  ]);
  return { workflow, submission };
}
