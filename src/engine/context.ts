import type { EngineCli } from './exec.js';
import type { EngineInfo, EngineOptions } from './types.js';

/** What every engine operation needs: the CLI to run, what was detected, the operator's bounds. */
export interface EngineContext {
  cli: EngineCli;
  info: EngineInfo;
  options: EngineOptions;
  /** Builds in progress, by image name: a second call for the same image waits on the first. */
  builds?: Map<string, SharedBuild>;
  /**
   * Images this process saw exist (or built): their existence is not asked again. One the
   * worker removes, or that a container cannot be created from, is forgotten.
   */
  knownImages?: Set<string>;
}

/** One build that several calls wait for (see build.ts). */
export interface SharedBuild {
  result: Promise<{ cached: boolean }>;
  /** Calls still waiting; when the last one gives up, the build is cancelled. */
  waiters: number;
  controller: AbortController;
  lines: Set<(line: string) => void>;
}

/** Moving a volume's files can take as long as a build (models are large); other calls are short. */
export function transferTimeoutMs(options: EngineOptions): number {
  return Math.max(options.callTimeoutMs, options.buildTimeoutMs);
}
