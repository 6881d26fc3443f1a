import { z } from 'zod';
import { WorkerError } from '../errors.js';
import { removeContainersArgs, removeVolumesArgs, volumeLabelsArgs } from './args.js';
import type { EngineContext } from './context.js';
import { execEngine } from './exec.js';
import { LABEL_MANAGED } from './labels.js';

const labelsSchema = z.record(z.string(), z.string()).nullable();

/**
 * `create -v NAME:/path` (and `--mount type=volume`) silently creates a named volume that
 * no longer exists, empty and unlabelled: a task would run on empty data, and the volume
 * would leak. So, once a container is created, every volume it mounts must carry the
 * worker's label. If one does not, the containers and the volumes the engine just made are
 * removed and the task fails with an error that may be retried.
 */
export async function checkMountedVolumes(
  ctx: EngineContext,
  containers: readonly string[],
  volumes: readonly string[],
): Promise<void> {
  if (volumes.length === 0) return;
  const call = { timeoutMs: ctx.options.callTimeoutMs };
  const lines = (await execEngine(ctx.cli, volumeLabelsArgs(volumes), call))
    .split('\n')
    .filter((line) => line.trim() !== '');
  const missing = volumes.filter((_, i) => {
    return parseLabels(lines[i])?.[LABEL_MANAGED] !== 'true';
  });
  if (missing.length === 0) return;
  await execEngine(ctx.cli, removeContainersArgs(containers), call).catch(() => undefined);
  await execEngine(ctx.cli, removeVolumesArgs(missing), call).catch(() => undefined);
  throw new WorkerError(
    'ENGINE_FAILED',
    `the task's volume ${missing.join(', ')} no longer exists: something removed it while the task ran`,
    {
      retryable: true,
      hint: 'is another process removing compute-worker volumes? Give each worker on a host its own --state-dir',
    },
  );
}

function parseLabels(line: string | undefined): Record<string, string> | null | undefined {
  try {
    const labels = labelsSchema.safeParse(JSON.parse(line ?? 'null'));
    return labels.success ? labels.data : undefined;
  } catch {
    return undefined;
  }
}
