import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Nsqd } from './nsqd.js';
import { isValidName } from './protocol.js';

/** The part of nsqd's HTTP API a test needs: /ping, /pub, /mpub, /stats. */
export async function startNsqdHttp(
  nsqd: Nsqd,
  port: number,
): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    handle(nsqd, req, res).catch(() => reply(res, 500, { message: 'INTERNAL_ERROR' }));
  });
  server.listen({ host: '127.0.0.1', port });
  await once(server, 'listening');
  const addr = server.address();
  return {
    port: addr && typeof addr === 'object' ? addr.port : port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function handle(nsqd: Nsqd, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  if (url.pathname === '/ping') return reply(res, 200, 'OK');
  if (url.pathname === '/stats') return reply(res, 200, nsqd.stats());
  if (url.pathname !== '/pub' && url.pathname !== '/mpub') {
    return reply(res, 404, { message: 'NOT_FOUND' });
  }
  if (req.method !== 'POST') return reply(res, 405, { message: 'METHOD_NOT_ALLOWED' });
  const topic = url.searchParams.get('topic');
  if (!topic) return reply(res, 400, { message: 'MISSING_ARG_TOPIC' });
  if (!isValidName(topic)) return reply(res, 400, { message: 'INVALID_TOPIC' });
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  if (body.length === 0) return reply(res, 400, { message: 'MSG_EMPTY' });
  if (url.pathname === '/pub') {
    nsqd.publish(topic, body, Number(url.searchParams.get('defer') ?? 0));
  } else {
    const lines = body
      .toString()
      .split('\n')
      .filter((l) => l.length > 0);
    nsqd.publish(topic, lines);
  }
  return reply(res, 200, 'OK');
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
  });
  res.end(text);
}
