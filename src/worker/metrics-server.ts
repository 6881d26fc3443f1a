import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WorkerError } from '../errors.js';
import type { HealthVerdict } from './health.js';

export interface ListenAddress {
  host: string;
  port: number;
}

/** "HOST:PORT", "[v6]:PORT" or a bare "PORT" (127.0.0.1: nothing is exposed unless asked). */
export function parseListenAddress(text: string): ListenAddress {
  const bad = (why: string) =>
    new WorkerError('CONFIG_INVALID', `--metrics-address "${text}": ${why}`, {
      hint: 'pass HOST:PORT (e.g. 0.0.0.0:9100) or a port alone for 127.0.0.1',
    });
  const match = /^(?:(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):)?(\d{1,5})$/.exec(text.trim());
  if (!match) throw bad('expected HOST:PORT or PORT');
  const port = Number(match[3]);
  if (port > 65_535) throw bad('the port is above 65535');
  return { host: match[1] ?? match[2] ?? '127.0.0.1', port };
}

export interface MetricsSources {
  scrape(): Promise<string>;
  contentType: string;
  live(): HealthVerdict;
  ready(): HealthVerdict;
  /** What the worker does now, served as JSON on /status. */
  status?(): Promise<unknown>;
}

export interface MetricsServer {
  /** Where it listens, as host:port (the port chosen when 0 was asked). */
  address: string;
  close(): Promise<void>;
}

/** Serves /metrics, /status, /healthz and /readyz on GET (and HEAD); anything else is a 404. */
export async function startMetricsServer(
  at: ListenAddress,
  sources: MetricsSources,
): Promise<MetricsServer> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0];
    const text = (status: number, body: string) => {
      response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
      response.end(request.method === 'HEAD' ? undefined : `${body}\n`);
    };
    if (request.method !== 'GET' && request.method !== 'HEAD') return text(405, 'GET only');
    if (path === '/healthz' || path === '/readyz') {
      const verdict = path === '/healthz' ? sources.live() : sources.ready();
      return text(verdict.ok ? 200 : 503, verdict.reason);
    }
    if (path === '/status' && sources.status) {
      sources.status().then(
        (body) => {
          response.writeHead(200, { 'content-type': 'application/json' });
          response.end(request.method === 'HEAD' ? undefined : `${JSON.stringify(body)}\n`);
        },
        (error: Error) => text(500, `status could not be read: ${error.message}`),
      );
      return;
    }
    if (path !== '/metrics')
      return text(404, 'not found: try /metrics, /status, /healthz or /readyz');
    sources.scrape().then(
      (body) => {
        response.writeHead(200, { 'content-type': sources.contentType });
        response.end(request.method === 'HEAD' ? undefined : body);
      },
      (error: Error) => text(500, `metrics could not be collected: ${error.message}`),
    );
  });
  // A scraper that stops reading must not hold sockets forever.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: at.host, port: at.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    throw new WorkerError(
      'CONFIG_INVALID',
      `--metrics-address ${at.host}:${at.port}: cannot listen: ${(error as Error).message}`,
    );
  }
  const bound = server.address() as AddressInfo;
  const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    address: `${host}:${bound.port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
