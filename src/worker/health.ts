import type { Engine } from '../engine/types.js';

const TICK_MS = 1_000;
/** The loop counts as alive while its timer fired this recently. */
const ALIVE_WITHIN_MS = 10_000;
const ENGINE_PING_MS = 30_000;
/** The engine counts as answering while its last answer is this recent. */
const ENGINE_WITHIN_MS = 60_000;

export interface HealthVerdict {
  ok: boolean;
  /** What is wrong, or "ok": a short line for the operator. */
  reason: string;
}

/**
 * Liveness (the event loop still runs timers) and readiness (connected to nsqd, the
 * engine answered within the last minute), for /healthz and /readyz.
 */
export class Health {
  private lastTick: number;
  private lastEngineAnswer?: number;
  private lastEngineError?: string;
  private pending?: Promise<void>;
  private readonly tick: NodeJS.Timeout;
  private readonly ping: NodeJS.Timeout;

  constructor(
    private readonly engine: Pick<Engine, 'ping'>,
    private readonly nsqdConnections: () => number,
    private readonly now: () => number = Date.now,
  ) {
    this.lastTick = now();
    this.tick = setInterval(() => {
      this.lastTick = this.now();
    }, TICK_MS);
    this.ping = setInterval(() => void this.pingEngine(), ENGINE_PING_MS);
    this.tick.unref();
    this.ping.unref();
    void this.pingEngine();
  }

  /** Asks the engine once; a call while a question is pending waits for that one. */
  pingEngine(): Promise<void> {
    this.pending ??= this.askEngine().finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async askEngine(): Promise<void> {
    try {
      await this.engine.ping();
      this.lastEngineAnswer = this.now();
      this.lastEngineError = undefined;
    } catch (error) {
      this.lastEngineError = (error as Error).message.split('\n')[0]?.slice(0, 200);
    }
  }

  live(): HealthVerdict {
    const since = this.now() - this.lastTick;
    return since <= ALIVE_WITHIN_MS
      ? { ok: true, reason: 'ok' }
      : { ok: false, reason: `the worker's loop last ran ${Math.round(since / 1000)}s ago` };
  }

  ready(): HealthVerdict {
    const problems: string[] = [];
    if (this.nsqdConnections() === 0) problems.push('not connected to any nsqd');
    const answered = this.lastEngineAnswer;
    if (answered === undefined || this.now() - answered > ENGINE_WITHIN_MS) {
      problems.push(
        answered === undefined
          ? 'the engine has not answered yet'
          : `the engine last answered ${Math.round((this.now() - answered) / 1000)}s ago`,
      );
      if (this.lastEngineError) problems.push(`engine: ${this.lastEngineError}`);
    }
    return problems.length
      ? { ok: false, reason: problems.join('; ') }
      : { ok: true, reason: 'ok' };
  }

  close(): void {
    clearInterval(this.tick);
    clearInterval(this.ping);
  }
}
