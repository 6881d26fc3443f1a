import { formatDuration } from '../config/duration.js';
import type { Logger } from '../log.js';

/**
 * Says when an nsqlookupd stops answering and when it answers again, once each per
 * outage, however many topics ask it and however often: the worker keeps asking every
 * poll interval, and a line per query would bury the rest of the log.
 */
export class LookupdWatch {
  private readonly down = new Set<string>();

  constructor(
    private readonly log: Logger,
    private readonly pollIntervalMs: number,
  ) {}

  /** One query of `endpoint`: `error` when it did not answer. */
  saw(endpoint: string, error?: Error): void {
    if (error) {
      if (this.down.has(endpoint)) return;
      this.down.add(endpoint);
      this.log.warn(
        { nsqlookupd: endpoint, reason: error.message },
        `nsqlookupd at ${endpoint} does not answer (${error.message}); asked again every ${formatDuration(this.pollIntervalMs)}`,
      );
    } else if (this.down.delete(endpoint)) {
      this.log.info({ nsqlookupd: endpoint }, `nsqlookupd at ${endpoint} answers again`);
    }
  }
}
