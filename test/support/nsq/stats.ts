import type { DeliveryRecord } from './channel.js';
import type { Nsqd } from './nsqd.js';

export interface ChannelStats {
  name: string;
  /** Queued and ready to go out. */
  depth: number;
  inFlight: number;
  deferred: number;
  messageCount: number;
  requeueCount: number;
  timeoutCount: number;
  finishCount: number;
  /** Subscribed connections. */
  clients: number;
  /** Every delivery so far (kept across restarts of this object, unlike nsqd's counters). */
  deliveries: DeliveryRecord[];
  /** Ids currently in flight with the owning connection and deadline. */
  inFlightIds: { id: string; connectionId: number; deadline: number }[];
}

export interface TopicStats {
  name: string;
  /** Messages held because the topic has no channel yet. */
  depth: number;
  messageCount: number;
  channels: ChannelStats[];
}

export interface ConnectionStats {
  id: number;
  remotePort: number;
  state: 'init' | 'subscribed' | 'closing';
  topic?: string;
  channel?: string;
  rdy: number;
  inFlight: number;
  messageCount: number;
  finishCount: number;
  requeueCount: number;
  msgTimeoutMs: number;
  heartbeatIntervalMs: number;
  clientId?: string;
  userAgent?: string;
}

export interface NsqdStats {
  running: boolean;
  topics: TopicStats[];
  connections: ConnectionStats[];
}

export function statsOf(nsqd: Nsqd): NsqdStats {
  return {
    running: nsqd.running,
    topics: [...nsqd.topics.values()].map((t) => ({
      name: t.name,
      depth: t.pending.length,
      messageCount: t.messageCount,
      channels: [...t.channels.values()].map((c) => ({
        name: c.name,
        depth: c.queue.length,
        inFlight: c.inFlight.size,
        deferred: c.deferred.size,
        messageCount: c.messageCount,
        requeueCount: c.requeueCount,
        timeoutCount: c.timeoutCount,
        finishCount: c.finishCount,
        clients: c.consumers.length,
        deliveries: [...c.deliveries],
        inFlightIds: [...c.inFlight.entries()].map(([id, e]) => ({
          id,
          connectionId: e.consumerId,
          deadline: e.deadline,
        })),
      })),
    })),
    connections: [...nsqd.connections].map((c) => ({
      id: c.id,
      remotePort: c.remotePort,
      state: c.state,
      topic: c.channel?.topic,
      channel: c.channel?.name,
      rdy: c.rdy,
      inFlight: c.inFlightCount,
      messageCount: c.messageCount,
      finishCount: c.finishCount,
      requeueCount: c.requeueCount,
      msgTimeoutMs: c.msgTimeoutMs,
      heartbeatIntervalMs: c.heartbeatIntervalMs,
      clientId: c.identity.clientId,
      userAgent: c.identity.userAgent,
    })),
  };
}

/** The stats of one channel, or undefined while it does not exist. */
export function channelOf(s: NsqdStats, topic: string, channel: string): ChannelStats | undefined {
  return s.topics.find((t) => t.name === topic)?.channels.find((c) => c.name === channel);
}

export function waitForStats(
  nsqd: Nsqd,
  predicate: (s: NsqdStats) => boolean,
  timeoutMs: number,
  what: string,
): Promise<NsqdStats> {
  return new Promise((resolve, reject) => {
    let last: NsqdStats | undefined;
    const check = () => {
      last = statsOf(nsqd);
      if (!predicate(last)) return;
      cleanup();
      resolve(last);
    };
    // Deadlines pass without any event, so poll as well as listen.
    const poll = setInterval(check, 50);
    const timer = setTimeout(() => {
      cleanup();
      const brief = JSON.stringify(last, (k, v) => (k === 'deliveries' ? v.length : v));
      reject(new Error(`nsqd: timed out after ${timeoutMs} ms waiting for ${what}; last ${brief}`));
    }, timeoutMs);
    const cleanup = () => {
      clearInterval(poll);
      clearTimeout(timer);
      nsqd.off('change', check);
    };
    nsqd.on('change', check);
    check();
  });
}
