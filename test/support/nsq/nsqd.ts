import { EventEmitter, once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { Topic } from './channel.js';
import { ClientConnection, type NsqdContext, type NsqdLimits } from './connection.js';
import { startNsqdHttp } from './nsqd-http.js';
import { type Command, IdFactory, isValidName, nowNanos, type StoredMessage } from './protocol.js';
import { type NsqdStats, statsOf, waitForStats } from './stats.js';

export type { NsqdStats } from './stats.js';

export interface NsqdOptions {
  /** --msg-timeout, default 60000. */
  msgTimeoutMs?: number;
  /** --max-msg-timeout, default 900000 (15m). */
  maxMsgTimeoutMs?: number;
  /** --max-req-timeout, default 3600000 (1h). */
  maxReqTimeoutMs?: number;
  /** The heartbeat a client gets when it does not ask for one (client_timeout / 2), default 30000. */
  heartbeatIntervalMs?: number;
  /** --max-heartbeat-interval, default 60000. */
  maxHeartbeatIntervalMs?: number;
  /** --max-rdy-count, default 2500. */
  maxRdyCount?: number;
  /** --max-msg-size, default 1 MiB. */
  maxMsgSize?: number;
  /** --output-buffer-timeout, default 250. */
  outputBufferTimeoutMs?: number;
  /** TCP port; give the old one to restart "the same" nsqd. Default: a free port. */
  port?: number;
  httpPort?: number;
  /** Topics, channels and messages from `stop()` of another instance. */
  restoreFrom?: NsqdSnapshot;
}

/** What survives a restart: metadata always, messages only after a clean shutdown. */
export interface NsqdSnapshot {
  topics: {
    name: string;
    pending: StoredMessage[];
    channels: { name: string; messages: StoredMessage[] }[];
  }[];
}

export interface ReceivedCommand {
  connectionId: number;
  name: string;
  params: string[];
  at: number;
}

// nsqd's QueueScanInterval: deadlines are checked every 100 ms, not to the millisecond.
const SCAN_INTERVAL_MS = 100;

/**
 * An in-process nsqd 1.3.0 on 127.0.0.1 that speaks TCP protocol V2 and a
 * little of the HTTP API. Emits 'change' after every state change.
 */
export class Nsqd extends EventEmitter implements NsqdContext {
  readonly host = '127.0.0.1';
  tcpPort = 0;
  httpPort = 0;
  running = false;
  readonly limits: NsqdLimits;
  readonly topics = new Map<string, Topic>();
  readonly connections = new Set<ClientConnection>();
  readonly received: ReceivedCommand[] = [];
  private readonly ids = new IdFactory();
  private server: Server | undefined;
  private http: { port: number; close(): Promise<void> } | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  private nextConnectionId = 1;
  private readonly sockets = new Set<Socket>();

  constructor(options: NsqdOptions = {}) {
    super();
    this.setMaxListeners(100);
    const maxMsgSize = options.maxMsgSize ?? 1024 * 1024;
    this.limits = {
      msgTimeoutMs: options.msgTimeoutMs ?? 60_000,
      maxMsgTimeoutMs: options.maxMsgTimeoutMs ?? 900_000,
      maxReqTimeoutMs: options.maxReqTimeoutMs ?? 3_600_000,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 30_000,
      maxHeartbeatIntervalMs: options.maxHeartbeatIntervalMs ?? 60_000,
      maxRdyCount: options.maxRdyCount ?? 2500,
      maxMsgSize,
      maxBodySize: Math.max(5 * 1024 * 1024, maxMsgSize),
      outputBufferSize: 16 * 1024,
      outputBufferTimeoutMs: options.outputBufferTimeoutMs ?? 250,
    };
    if (options.restoreFrom) this.restore(options.restoreFrom);
    this.tcpPort = options.port ?? 0;
    this.httpPort = options.httpPort ?? 0;
  }

  /** host:port for nsqjs `nsqdTCPAddresses`. */
  get tcpAddress(): string {
    return `${this.host}:${this.tcpPort}`;
  }

  get httpAddress(): string {
    return `${this.host}:${this.httpPort}`;
  }

  /** Listens (again) on the same ports; after a stop, holds what that stop kept. */
  async start(): Promise<void> {
    if (this.running) return;
    const server = createServer((socket) => this.accept(socket));
    server.listen({ host: this.host, port: this.tcpPort });
    await once(server, 'listening');
    const addr = server.address();
    if (addr && typeof addr === 'object') this.tcpPort = addr.port;
    this.server = server;
    this.http = await startNsqdHttp(this, this.httpPort);
    this.httpPort = this.http.port;
    this.scanTimer = setInterval(() => this.scan(), SCAN_INTERVAL_MS);
    this.running = true;
    this.changed();
  }

  /**
   * Stops like a crash by default: connections dropped, in-memory and in-flight
   * messages lost. `clean: true` keeps every message for the next start, like
   * nsqd's shutdown flush to disk (attempts included).
   */
  async stop(opts: { clean?: boolean } = {}): Promise<NsqdSnapshot> {
    if (this.running) {
      this.running = false;
      clearInterval(this.scanTimer);
      for (const conn of [...this.connections]) conn.kill();
      for (const s of this.sockets) s.destroy();
      const server = this.server;
      this.server = undefined;
      await Promise.all([
        new Promise<void>((resolve) => server?.close(() => resolve()) ?? resolve()),
        this.http?.close(),
      ]);
      for (const topic of this.topics.values()) {
        if (!opts.clean) topic.pending.splice(0);
        for (const ch of topic.channels.values()) ch.reset(opts.clean ? ch.allMessages() : []);
      }
      this.changed();
    }
    return this.snapshot();
  }

  /** stop() then start() on the same ports, after `downMs`. */
  async restart(opts: { clean?: boolean; downMs?: number } = {}): Promise<void> {
    await this.stop(opts);
    if (opts.downMs) await new Promise((r) => setTimeout(r, opts.downMs));
    await this.start();
  }

  /** Publishes straight into the topic, as if through PUB / MPUB / DPUB. */
  publish(topic: string, body: string | Buffer | (string | Buffer)[], deferMs = 0): string[] {
    if (!isValidName(topic)) throw new Error(`invalid topic name ${topic}`);
    const bodies = (Array.isArray(body) ? body : [body]).map((b) =>
      typeof b === 'string' ? Buffer.from(b) : b,
    );
    const ids = bodies.map(() => this.ids.next());
    this.putAll(topic, bodies, ids, deferMs);
    this.changed();
    return ids;
  }

  stats(): NsqdStats {
    return statsOf(this);
  }

  /** Resolves with the stats once `predicate` holds; rejects after `timeoutMs` naming `what`. */
  waitFor(predicate: (s: NsqdStats) => boolean, timeoutMs = 10_000, what = 'condition') {
    return waitForStats(this, predicate, timeoutMs, what);
  }

  snapshot(): NsqdSnapshot {
    return {
      topics: [...this.topics.values()].map((t) => ({
        name: t.name,
        pending: t.pending.map((p) => ({ ...p.msg })),
        channels: [...t.channels.values()].map((c) => ({
          name: c.name,
          messages: c.allMessages().map((m) => ({ ...m })),
        })),
      })),
    };
  }

  // --- NsqdContext, used by connections ---

  getTopic(name: string): Topic {
    let topic = this.topics.get(name);
    if (!topic) {
      topic = new Topic(name, () => this.limits.maxMsgTimeoutMs);
      this.topics.set(name, topic);
    }
    return topic;
  }

  record(connectionId: number, command: Command): void {
    this.received.push({
      connectionId,
      name: command.name,
      params: command.params,
      at: Date.now(),
    });
  }

  changed(): void {
    for (const topic of this.topics.values()) {
      for (const ch of topic.channels.values()) ch.pump();
    }
    this.emit('change');
  }

  removeConnection(conn: ClientConnection): void {
    this.connections.delete(conn);
  }

  private putAll(topic: string, bodies: Buffer[], ids: string[], deferMs: number): void {
    const t = this.getTopic(topic);
    bodies.forEach((body, i) => {
      t.put({ id: ids[i] as string, body, timestamp: nowNanos(), attempts: 0 }, deferMs);
    });
  }

  private accept(socket: Socket): void {
    if (!this.running) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    this.connections.add(new ClientConnection(this.nextConnectionId++, socket, this));
    this.changed();
  }

  private scan(): void {
    const now = Date.now();
    let moved = false;
    for (const topic of this.topics.values()) {
      for (const ch of topic.channels.values()) moved = ch.scan(now) || moved;
    }
    if (moved) this.changed();
  }

  private restore(snap: NsqdSnapshot): void {
    for (const t of snap.topics) {
      const topic = this.getTopic(t.name);
      for (const p of t.pending) topic.pending.push({ msg: { ...p }, deferMs: 0 });
      for (const c of t.channels) {
        topic.getChannel(c.name).reset(c.messages.map((m) => ({ ...m })));
      }
    }
  }
}

/** Starts an nsqd stand-in on 127.0.0.1 (free ports unless given). */
export async function startNsqd(options: NsqdOptions = {}): Promise<Nsqd> {
  const nsqd = new Nsqd(options);
  await nsqd.start();
  return nsqd;
}
