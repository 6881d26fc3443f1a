import { once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import type { Nsqd } from './nsqd.js';
import { NSQD_VERSION } from './protocol.js';

/**
 * nsqlookupd's HTTP side on 127.0.0.1. A registered nsqd is a producer of a
 * topic while it runs and has that topic; a stopped nsqd drops out at once,
 * as when its TCP link to a real nsqlookupd closes.
 */
export class Nsqlookupd {
  readonly host = '127.0.0.1';
  httpPort: number;
  running = false;
  /** Every /lookup query, so a test can wait for the next poll. */
  readonly lookups: { topic: string; at: number }[] = [];
  private readonly producers = new Map<Nsqd, string>();
  private server: Server | undefined;

  constructor(nsqds: Nsqd[] = [], port = 0) {
    this.httpPort = port;
    for (const n of nsqds) this.register(n);
  }

  /** host:port for nsqjs `lookupdHTTPAddresses`. */
  get address(): string {
    return `${this.host}:${this.httpPort}`;
  }

  register(nsqd: Nsqd): void {
    // remote_address is the nsqd's end of its TCP link to nsqlookupd: some ephemeral port.
    const port = 32768 + Math.floor(Math.random() * 28000);
    this.producers.set(nsqd, `${nsqd.host}:${port}`);
  }

  unregister(nsqd: Nsqd): void {
    this.producers.delete(nsqd);
  }

  async start(): Promise<void> {
    if (this.running) return;
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      this.handle(url, res);
    });
    server.listen({ host: this.host, port: this.httpPort });
    await once(server, 'listening');
    const addr = server.address();
    if (addr && typeof addr === 'object') this.httpPort = addr.port;
    this.server = server;
    this.running = true;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    const server = this.server;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server?.closeAllConnections();
      server?.close(() => resolve());
    });
  }

  private handle(url: URL, res: ServerResponse): void {
    if (url.pathname === '/ping') {
      text(res, 200, 'OK');
      return;
    }
    if (url.pathname === '/info') {
      json(res, 200, { version: NSQD_VERSION });
      return;
    }
    const live = [...this.producers].filter(([n]) => n.running);
    if (url.pathname === '/topics') {
      const topics = new Set(live.flatMap(([n]) => [...n.topics.keys()]));
      json(res, 200, { topics: [...topics] });
      return;
    }
    if (url.pathname !== '/lookup') {
      json(res, 404, { message: 'NOT_FOUND' });
      return;
    }
    const topic = url.searchParams.get('topic');
    if (!topic) {
      json(res, 400, { message: 'MISSING_ARG_TOPIC' });
      return;
    }
    this.lookups.push({ topic, at: Date.now() });
    const having = live.filter(([n]) => n.topics.has(topic));
    if (having.length === 0) {
      json(res, 404, { message: 'TOPIC_NOT_FOUND' });
      return;
    }
    const channels = new Set(
      having.flatMap(([n]) => [...(n.topics.get(topic)?.channels.keys() ?? [])]),
    );
    json(res, 200, {
      channels: [...channels],
      producers: having.map(([n, remote]) => ({
        remote_address: remote,
        hostname: hostname(),
        broadcast_address: n.host,
        tcp_port: n.tcpPort,
        http_port: n.httpPort,
        version: NSQD_VERSION,
      })),
    });
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(body);
}

/** Starts an nsqlookupd stand-in listing the given nsqds (more with `register`). */
export async function startNsqlookupd(
  opts: { nsqds?: Nsqd[]; port?: number } = {},
): Promise<Nsqlookupd> {
  const lookupd = new Nsqlookupd(opts.nsqds, opts.port);
  await lookupd.start();
  return lookupd;
}
