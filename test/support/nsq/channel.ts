import type { StoredMessage } from './protocol.js';

/** A subscribed connection as a channel sees it. */
export interface Consumer {
  readonly id: number;
  /** Subscribed, not closing, and RDY above the in-flight count (client_v2.go IsReadyForMessages). */
  isReady(): boolean;
  inFlightCount: number;
  readonly msgTimeoutMs: number;
  deliver(msg: StoredMessage): void;
}

export interface DeliveryRecord {
  id: string;
  attempts: number;
  connectionId: number;
  /** Date.now() at delivery. */
  at: number;
  body: string;
}

interface InFlight {
  msg: StoredMessage;
  consumerId: number;
  deliveredAt: number;
  deadline: number;
}

export type PopError = 'ID not in flight' | 'client does not own message';

/** One channel of one topic: a FIFO queue, the in-flight and deferred sets (nsqd/channel.go). */
export class Channel {
  readonly queue: StoredMessage[] = [];
  readonly inFlight = new Map<string, InFlight>();
  readonly deferred = new Map<string, { msg: StoredMessage; readyAt: number }>();
  readonly consumers: Consumer[] = [];
  readonly deliveries: DeliveryRecord[] = [];
  messageCount = 0;
  requeueCount = 0;
  timeoutCount = 0;
  finishCount = 0;
  private next = 0;

  constructor(
    readonly topic: string,
    readonly name: string,
    private readonly maxMsgTimeoutMs: () => number,
  ) {}

  put(msg: StoredMessage, deferMs = 0): void {
    this.messageCount++;
    if (deferMs > 0) this.deferred.set(msg.id, { msg, readyAt: Date.now() + deferMs });
    else this.queue.push(msg);
  }

  addConsumer(c: Consumer): void {
    this.consumers.push(c);
  }

  /** The connection is gone; what it had in flight stays there until the deadline. */
  removeConsumer(c: Consumer): void {
    const i = this.consumers.indexOf(c);
    if (i >= 0) this.consumers.splice(i, 1);
  }

  /** Hands queued messages to ready consumers in turn. */
  pump(): void {
    while (this.queue.length > 0) {
      const consumer = this.pickReady();
      if (!consumer) return;
      const msg = this.queue.shift() as StoredMessage;
      msg.attempts++;
      const now = Date.now();
      this.inFlight.set(msg.id, {
        msg,
        consumerId: consumer.id,
        deliveredAt: now,
        deadline: now + consumer.msgTimeoutMs,
      });
      consumer.inFlightCount++;
      this.deliveries.push({
        id: msg.id,
        attempts: msg.attempts,
        connectionId: consumer.id,
        at: now,
        body: msg.body.toString(),
      });
      consumer.deliver(msg);
    }
  }

  private pickReady(): Consumer | undefined {
    const n = this.consumers.length;
    for (let k = 0; k < n; k++) {
      const i = (this.next + k) % n;
      const c = this.consumers[i];
      if (c?.isReady()) {
        this.next = (i + 1) % n;
        return c;
      }
    }
    return undefined;
  }

  private pop(consumer: Consumer, id: string): InFlight | PopError {
    const entry = this.inFlight.get(id);
    if (!entry) return 'ID not in flight';
    if (entry.consumerId !== consumer.id) return 'client does not own message';
    this.inFlight.delete(id);
    return entry;
  }

  finish(consumer: Consumer, id: string): PopError | undefined {
    const entry = this.pop(consumer, id);
    if (typeof entry === 'string') return entry;
    this.finishCount++;
    consumer.inFlightCount--;
    return undefined;
  }

  requeue(consumer: Consumer, id: string, delayMs: number): PopError | undefined {
    const entry = this.pop(consumer, id);
    if (typeof entry === 'string') return entry;
    this.requeueCount++;
    consumer.inFlightCount--;
    if (delayMs > 0) this.deferred.set(id, { msg: entry.msg, readyAt: Date.now() + delayMs });
    else this.queue.push(entry.msg);
    return undefined;
  }

  /** Channel.TouchMessage: now + msg_timeout, but never past delivery + max-msg-timeout. */
  touch(consumer: Consumer, id: string): PopError | undefined {
    const entry = this.inFlight.get(id);
    if (!entry) return 'ID not in flight';
    if (entry.consumerId !== consumer.id) return 'client does not own message';
    const cap = entry.deliveredAt + this.maxMsgTimeoutMs();
    entry.deadline = Math.min(Date.now() + consumer.msgTimeoutMs, cap);
    return undefined;
  }

  /** processInFlightQueue + processDeferredQueue; returns whether anything moved. */
  scan(now: number): boolean {
    let moved = false;
    for (const [id, entry] of this.inFlight) {
      if (entry.deadline > now) continue;
      this.inFlight.delete(id);
      this.timeoutCount++;
      const owner = this.consumers.find((c) => c.id === entry.consumerId);
      if (owner) owner.inFlightCount--;
      this.queue.push(entry.msg);
      moved = true;
    }
    for (const [id, d] of this.deferred) {
      if (d.readyAt > now) continue;
      this.deferred.delete(id);
      this.queue.push(d.msg);
      moved = true;
    }
    return moved;
  }

  /** What a clean shutdown writes to disk: queued, in-flight and deferred messages. */
  allMessages(): StoredMessage[] {
    return [
      ...this.queue,
      ...[...this.inFlight.values()].map((e) => e.msg),
      ...[...this.deferred.values()].map((d) => d.msg),
    ];
  }

  /** A crash: everything held in memory is gone; counters and the log stay for tests. */
  reset(messages: StoredMessage[] = []): void {
    this.queue.splice(0, this.queue.length, ...messages);
    this.inFlight.clear();
    this.deferred.clear();
    this.consumers.splice(0);
  }
}

/** A topic copies each message into every channel; with no channel yet it holds them. */
export class Topic {
  readonly channels = new Map<string, Channel>();
  readonly pending: { msg: StoredMessage; deferMs: number }[] = [];
  messageCount = 0;

  constructor(
    readonly name: string,
    private readonly maxMsgTimeoutMs: () => number,
  ) {}

  put(msg: StoredMessage, deferMs = 0): void {
    this.messageCount++;
    if (this.channels.size === 0) {
      this.pending.push({ msg, deferMs });
      return;
    }
    for (const ch of this.channels.values()) ch.put({ ...msg }, deferMs);
  }

  getChannel(name: string): Channel {
    let ch = this.channels.get(name);
    if (!ch) {
      ch = new Channel(this.name, name, this.maxMsgTimeoutMs);
      this.channels.set(name, ch);
      for (const p of this.pending.splice(0)) ch.put(p.msg, p.deferMs);
    }
    return ch;
  }
}
