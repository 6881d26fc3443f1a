import { LABEL_RUN, LABEL_TASK, LABEL_VOLUME_ROLE, LABEL_WORKER } from '../engine/labels.js';
import type { TaskEnv } from './context.js';

/** Labels of everything one execution of one task creates: cleanup removes by them. */
export function taskLabels(env: TaskEnv, taskUuid: string, runId: string): Record<string, string> {
  return { [LABEL_WORKER]: env.workerId, [LABEL_TASK]: taskUuid, [LABEL_RUN]: runId };
}

/** Creates one fresh volume per role; names are the engine's, never derived from task data. */
export async function createVolumes<R extends string>(
  env: TaskEnv,
  labels: Record<string, string>,
  roles: readonly R[],
): Promise<Record<R, string>> {
  const volumes = {} as Record<R, string>;
  for (const role of roles) {
    volumes[role] = await env.engine.createVolume({ ...labels, [LABEL_VOLUME_ROLE]: role });
  }
  return volumes;
}
