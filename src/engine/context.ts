import type { EngineCli } from './exec.js';
import type { EngineInfo, EngineOptions } from './types.js';

/** What every engine operation needs: the CLI to run, what was detected, the operator's bounds. */
export interface EngineContext {
  cli: EngineCli;
  info: EngineInfo;
  options: EngineOptions;
}

/** Moving a volume's files can take as long as a build (models are large); other calls are short. */
export function transferTimeoutMs(options: EngineOptions): number {
  return Math.max(options.callTimeoutMs, options.buildTimeoutMs);
}
