import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The common part of the test stand-ins for storage and orchestrator: a real HTTP
 * server on 127.0.0.1 that checks Basic Auth, records every request and can be told
 * to misbehave on chosen paths.
 */

export interface RecordedRequest {
  method: string;
  /** Path and query as received. */
  path: string;
  /** All headers except Authorization. */
  headers: Record<string, string | string[] | undefined>;
  /** Wall-clock time (ms) the request arrived. */
  at: number;
  /** The body as the route understood it (JSON, or a summary of an upload), once read. */
  body?: unknown;
  /** The status answered. */
  status?: number;
  /** Set when the connection closes: false if the answer was cut off (the client went away). */
  completed?: boolean;
  /** Bytes of a streamed fault's body written before it stopped. */
  sent?: number;
}

/**
 * An answer body written chunk after chunk, as fast as the client reads it or one chunk
 * every `intervalMs`, `count` chunks (default: until the client goes away). Without
 * `length` it has no Content-Length (chunked); with it, that length is announced.
 */
export interface StreamFault {
  status: number;
  chunk: string | Buffer;
  count?: number;
  intervalMs?: number;
  length?: number;
  contentType?: string;
}

export type Fault = { times?: number } & (
  | { status: number; body?: unknown }
  | { close: true }
  | { delayMs: number }
  | { stream: StreamFault }
);

export interface StandInOptions {
  user?: string;
  password?: string;
  /** Paths answered without credentials (a real storage's /health is). */
  open?: readonly string[];
}

export interface StandIn {
  url: string;
  host: string;
  port: number;
  readonly requests: RecordedRequest[];
  /**
   * Misbehave on requests matching `match` (a path such as `/data/x/blob`, `GET /health`,
   * or a RegExp tested against `METHOD /path?query`), `times` times (default: always).
   */
  fault(match: string | RegExp, fault: Fault): void;
  clearFaults(): void;
  close(): Promise<void>;
}

export type Route = (
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  record: RecordedRequest,
) => Promise<void>;

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** Writes a streamed fault's body, minding backpressure, until done or the client leaves. */
async function sendStream(res: ServerResponse, fault: StreamFault, record: RecordedRequest) {
  const chunk = Buffer.from(fault.chunk);
  const headers: Record<string, string | number> = {
    'content-type': fault.contentType ?? 'application/octet-stream',
  };
  if (fault.length !== undefined) headers['content-length'] = fault.length;
  res.writeHead(fault.status, headers);
  record.sent = 0;
  const count = fault.count ?? Number.POSITIVE_INFINITY;
  for (let i = 0; i < count && !res.destroyed; i++) {
    if (fault.intervalMs) await sleep(fault.intervalMs);
    if (res.destroyed) break;
    record.sent += chunk.length;
    if (!res.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    }
  }
  if (!res.destroyed) res.end();
}

export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Parses a JSON request body strictly: JSON content type and an object. */
export async function readJsonObject(
  req: IncomingMessage,
): Promise<Record<string, unknown> | string> {
  const text = (await readBody(req)).toString('utf8');
  if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) {
    return 'Content-Type must be application/json';
  }
  try {
    const json = JSON.parse(text) as unknown;
    if (typeof json === 'object' && json !== null && !Array.isArray(json)) {
      return json as Record<string, unknown>;
    }
  } catch {
    // answered below
  }
  return 'body must be a JSON object';
}

function matches(match: string | RegExp, method: string, path: string): boolean {
  const pathname = path.split('?')[0];
  if (typeof match === 'string') return match === pathname || match === `${method} ${pathname}`;
  return match.test(`${method} ${path}`);
}

export async function startStandIn(
  realm: string,
  options: StandInOptions,
  route: Route,
): Promise<StandIn> {
  const expected = `Basic ${Buffer.from(`${options.user ?? 'u'}:${options.password ?? 'p'}`).toString('base64')}`;
  const requests: RecordedRequest[] = [];
  let faults: { match: string | RegExp; fault: Fault; left: number }[] = [];
  const sockets = new Set<Socket>();

  const server = createServer(async (req, res) => {
    const path = req.url ?? '/';
    const { authorization, ...headers } = req.headers;
    const record: RecordedRequest = { method: req.method ?? '', path, headers, at: Date.now() };
    requests.push(record);
    res.on('finish', () => {
      record.status = res.statusCode;
    });
    res.on('close', () => {
      record.completed = res.writableFinished;
    });
    try {
      // As a real service: a stranger is refused before anything else happens.
      if (authorization !== expected && !options.open?.includes(path.split('?')[0] ?? '')) {
        await readBody(req);
        res.setHeader('www-authenticate', `Basic realm="${realm}"`);
        sendJson(res, 401, { error: 'unauthorized: wrong user or password' });
        return;
      }
      const active = faults.find((f) => f.left > 0 && matches(f.match, record.method, path));
      if (active) {
        active.left -= 1;
        const fault = active.fault;
        if ('close' in fault) {
          req.socket.destroy();
          return;
        }
        if ('stream' in fault) {
          await readBody(req);
          await sendStream(res, fault.stream, record);
          return;
        }
        if ('status' in fault) {
          await readBody(req);
          sendJson(res, fault.status, fault.body ?? { error: `injected fault ${fault.status}` });
          return;
        }
        await sleep(fault.delayMs);
      }
      await route(req, res, new URL(path, 'http://stand-in'), record);
    } catch (error) {
      if (!res.headersSent)
        sendJson(res, 500, { error: `stand-in failed: ${(error as Error).message}` });
      else res.destroy();
    }
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // Idle connections outlive the client's keep-alive (4 s): under load a stalled event loop
  // would otherwise let the stand-in close a socket the client is about to reuse, a race
  // of the test machine, not of the worker.
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    requests,
    fault(match, fault) {
      faults.push({ match, fault, left: fault.times ?? Number.POSITIVE_INFINITY });
    },
    clearFaults() {
      faults = [];
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A 127.0.0.1 port nothing listens on (it was free a moment ago), to see a connection refused. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
