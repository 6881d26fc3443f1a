import type { EventEmitter } from 'node:events';
import nsq from 'nsqjs';
import { lookupProducers, type Producer } from './lookupd.js';

/** The parts of an nsqjs 0.13 message the worker uses (its typings lag the library). */
export interface NsqMessage {
  readonly id: string;
  readonly body: Buffer;
  readonly attempts: number;
  readonly hasResponded: boolean;
  /** The connection's msg_timeout and nsqd's max_msg_timeout, in ms, from IDENTIFY. */
  readonly msgTimeout: number;
  readonly maxMsgTimeout: number;
  timeUntilTimeout(hard?: boolean): number | null;
  finish(): void;
  requeue(delay?: number, backoff?: boolean): void;
  touch(): void;
}

interface NsqdConnection extends EventEmitter {
  setRdy(count: number): void;
  close(): void;
  readonly nsqdHost: string;
  readonly nsqdPort: number;
  readonly msgTimeout: number;
  readonly maxMsgTimeout: number;
  readonly nsqdVersion: string | null;
}

/**
 * A delivered message and the connection it came on. nsqd only accepts FIN, REQ and
 * TOUCH for a message on the connection that received it, and nsqjs writes to a dead
 * socket silently, so the worker must know when that connection is gone: the lease is
 * lost and NSQ will deliver the message again after its timeout.
 */
export class Lease {
  /** The connection that delivered the message closed. */
  lost = false;
  /** nsqd's max-msg-timeout passed: the message is in NSQ's hands again, whatever we do. */
  expired = false;
  constructor(
    readonly message: NsqMessage,
    readonly nsqd: string,
    private readonly holders: Set<Lease>,
  ) {
    holders.add(this);
  }

  private settled = false;
  private readonly onSettled: (() => void)[] = [];

  /** Calls `fn` once the message is answered (FIN or REQ) or let go of, whichever comes first. */
  whenSettled(fn: () => void): void {
    if (this.settled) fn();
    else this.onSettled.push(fn);
  }

  /**
   * FIN or REQ was sent: nsqd stops counting the message against RDY and may deliver the
   * next one at once, before the task's own bookkeeping ends, so a slot is free from here.
   */
  settle(): void {
    if (this.settled) return;
    this.settled = true;
    for (const fn of this.onSettled.splice(0)) fn();
  }

  /** The worker is done with the message: its connection need not track it any more. */
  release(): void {
    this.holders.delete(this);
    this.settle();
  }
}

export interface NsqdInfo {
  address: string;
  msgTimeoutMs: number;
  maxMsgTimeoutMs: number;
  version: string | null;
}

export interface ReaderOptions {
  topic: string;
  channel: string;
  lookupdUrls: string[];
  nsqdAddresses: string[];
  maxInFlight: number;
  /** How often nsqlookupd is asked, and lost direct connections retried (nsqjs: at least 1 s). */
  pollIntervalMs: number;
  heartbeatIntervalMs?: number;
}

export interface ReaderHandlers {
  onMessage(lease: Lease): void;
  /** An error of an nsqd connection (a refused connect, a protocol error), once each. */
  onError(error: Error, nsqd?: string): void;
  onNsqdReady?(info: NsqdInfo): void;
  /** `wasReady`: the connection had subscribed (else it failed, and onError said why). */
  onNsqdClosed?(address: string, wasReady: boolean): void;
  /** Each query of an nsqlookupd: `error` when it did not answer. */
  onLookupd?(endpoint: string, error?: Error): void;
}

interface ReaderInternals {
  isPaused(): boolean;
  connectToNSQD(host: string, port: number): void;
  roundrobinLookupd: { next(): string[]; length(): number };
}

export interface TopicReader {
  connect(): void;
  /** RDY 0 on every connection: nothing new is delivered. */
  pause(): void;
  /** Takes messages again after pause(). */
  resume(): void;
  close(): void;
}

/** Opens an nsqjs Reader whose messages come wrapped in a Lease that knows its connection. */
export function openReader(options: ReaderOptions, handlers: ReaderHandlers): TopicReader {
  const leases = new Map<NsqdConnection, Set<Lease>>();
  const pending = new WeakMap<NsqMessage, Lease>();
  // nsqjs emits a socket's error twice (as "error" and "connection_error"), each again on
  // the Reader: the worker says it once, naming the nsqd.
  const told = new WeakSet<object>();
  const tell = (error: unknown, nsqd?: string) => {
    const e = error instanceof Error ? error : new Error(String(error));
    if (typeof error === 'object' && error !== null) {
      if (told.has(error)) return;
      told.add(error);
    }
    handlers.onError(e, nsqd);
  };

  class LeaseReader extends nsq.Reader {
    registerConnectionListeners(conn: NsqdConnection): void {
      const address = `${conn.nsqdHost}:${conn.nsqdPort}`;
      // Before nsqjs's own listeners, which hand the error on to the Reader's.
      conn.on('error', (error: unknown) => tell(error, address));
      conn.on('connection_error', (error: unknown) => tell(error, address));
      // The worker's listeners below run after nsqjs's, which hands messages to the
      // Reader on the next tick.
      (
        nsq.Reader.prototype as unknown as { registerConnectionListeners(c: NsqdConnection): void }
      ).registerConnectionListeners.call(this, conn);
      const held = new Set<Lease>();
      leases.set(conn, held);
      conn.on('message', (message: NsqMessage) => {
        pending.set(message, new Lease(message, address, held));
      });
      // 'ready' comes after SUB and again after every RDY: report the settings once.
      let announced = false;
      conn.on('ready', () => {
        if (announced) return;
        announced = true;
        handlers.onNsqdReady?.({
          address,
          msgTimeoutMs: conn.msgTimeout,
          maxMsgTimeoutMs: conn.maxMsgTimeout,
          version: conn.nsqdVersion,
        });
      });
      conn.on('closed', () => {
        for (const lease of leases.get(conn) ?? []) lease.lost = true;
        leases.delete(conn);
        handlers.onNsqdClosed?.(address, announced);
      });
    }

    // nsqjs's own query says nothing when an nsqlookupd is down: this one does.
    override async queryLookupd(): Promise<void> {
      const self = this as unknown as ReaderInternals;
      if (self.isPaused() || self.roundrobinLookupd.length() === 0) return;
      const endpoint = self.roundrobinLookupd.next()[0] as string;
      let producers: Producer[];
      try {
        producers = await lookupProducers(endpoint, options.topic);
      } catch (error) {
        handlers.onLookupd?.(endpoint, error as Error);
        return;
      }
      handlers.onLookupd?.(endpoint);
      for (const p of producers) {
        const host = p.broadcast_address || p.hostname;
        if (host) self.connectToNSQD(host, p.tcp_port);
      }
    }
  }
  const reader = new LeaseReader(options.topic, options.channel, {
    lookupdHTTPAddresses: options.lookupdUrls,
    nsqdTCPAddresses: options.nsqdAddresses,
    maxInFlight: options.maxInFlight,
    lookupdPollInterval: Math.max(1, Math.round(options.pollIntervalMs / 1000)),
    heartbeatInterval: Math.max(1, Math.round((options.heartbeatIntervalMs ?? 30_000) / 1000)),
    // No maxAttempts: the worker counts attempts itself, so nsqjs never auto-finishes.
    maxAttempts: 0,
  });
  const events = reader as unknown as EventEmitter;
  events.on('message', (message: NsqMessage) => {
    const lease = pending.get(message);
    if (!lease) return;
    pending.delete(message);
    handlers.onMessage(lease);
  });
  // Without listeners nsqjs's errors (E_FIN_FAILED, lookupd unreachable) crash the process.
  events.on('error', (error: Error) => tell(error));

  // nsqjs can lose track of a live connection when another one fails before SUB
  // (readerrdy.js removes index -1), after which its pause() and close() miss it; the
  // worker reaches every connection it saw itself.
  return {
    connect: () => reader.connect(),
    pause: () => {
      reader.pause();
      for (const conn of leases.keys()) conn.setRdy(0);
    },
    resume: () => reader.unpause(),
    close: () => {
      reader.close();
      for (const conn of leases.keys()) conn.close();
    },
  };
}
