import { connect } from 'node:net';
import { request } from 'undici';
import { z } from 'zod';
import { formatDuration } from '../config/duration.js';
import { type Check, fail, pass, warn } from './check.js';

const IdentifyAnswer = z.object({
  max_msg_timeout: z.number(),
  msg_timeout: z.number(),
  version: z.string().optional(),
});
export type NsqdIdentity = z.infer<typeof IdentifyAnswer>;

const LookupAnswer = z.object({
  producers: z.array(
    z.object({
      broadcast_address: z.string().optional(),
      hostname: z.string().optional(),
      tcp_port: z.number(),
    }),
  ),
});

/** Speaks just enough NSQ protocol V2 to learn an nsqd's message timeouts from IDENTIFY. */
export function identifyNsqd(address: string, timeoutMs = 5000): Promise<NsqdIdentity> {
  const [host, port] = splitHostPort(address, 4150);
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let buffer = Buffer.alloc(0);
    const done = (error?: Error, value?: NsqdIdentity) => {
      socket.destroy();
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(value as NsqdIdentity);
    };
    const timer = setTimeout(
      () => done(new Error(`no IDENTIFY answer from ${address} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('error', (error) => done(error));
    socket.on('connect', () => {
      const body = Buffer.from(
        JSON.stringify({
          client_id: 'compute-worker-doctor',
          feature_negotiation: true,
          user_agent: 'compute-worker-doctor',
        }),
      );
      const size = Buffer.alloc(4);
      size.writeUInt32BE(body.length);
      socket.write(Buffer.concat([Buffer.from('  V2IDENTIFY\n'), size, body]));
    });
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (buffer.length < 8) return;
      const size = buffer.readUInt32BE(0);
      if (buffer.length < 4 + size) return;
      const type = buffer.readUInt32BE(4);
      const data = buffer.subarray(8, 4 + size).toString('utf8');
      if (type !== 0)
        return done(new Error(`nsqd at ${address} answered IDENTIFY with an error: ${data}`));
      try {
        done(undefined, IdentifyAnswer.parse(JSON.parse(data)));
      } catch {
        done(
          new Error(
            `nsqd at ${address} answered IDENTIFY with something else than its JSON settings: ${data.slice(0, 200)}`,
          ),
        );
      }
    });
  });
}

function splitHostPort(address: string, defaultPort: number): [string, number] {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(address.replace(/^[a-z]+:\/\//, ''));
  return [m?.[1] ?? address, Number(m?.[2] ?? defaultPort)];
}

export interface NsqCheckOptions {
  lookupdUrls: string[];
  nsqdAddresses: string[];
  learnTimeoutMs: number;
  predictTimeoutMs: number;
}

/** nsqlookupd answers, each nsqd answers, and each lets a task stay in flight as long as it may run. */
export async function checkNsq(options: NsqCheckOptions): Promise<Check[]> {
  const checks: Check[] = [];
  const nsqds = new Set(options.nsqdAddresses);
  for (const url of options.lookupdUrls) {
    const base = /^https?:\/\//.test(url) ? url : `http://${url}`;
    try {
      const ping = await request(new URL('/ping', base), {
        headersTimeout: 5000,
        bodyTimeout: 5000,
      });
      await ping.body.dump();
      if (ping.statusCode !== 200) throw new Error(`/ping answered ${ping.statusCode}`);
      checks.push(pass('nsqlookupd', `nsqlookupd at ${url} answers`));
      for (const topic of ['train', 'prediction']) {
        const res = await request(new URL(`/lookup?topic=${topic}`, base), {
          headersTimeout: 5000,
          bodyTimeout: 5000,
        });
        const body = await res.body.text();
        if (res.statusCode === 404) continue; // the topic exists once something is published
        for (const p of LookupAnswer.parse(JSON.parse(body)).producers) {
          nsqds.add(`${p.broadcast_address || p.hostname}:${p.tcp_port}`);
        }
      }
    } catch (error) {
      checks.push(fail('nsqlookupd', `nsqlookupd at ${url} does not answer`, error));
    }
  }
  if (options.lookupdUrls.length && nsqds.size === 0) {
    checks.push(warn('nsqd', 'nsqlookupd knows no nsqd with topic train or prediction yet'));
  }
  for (const address of nsqds) {
    try {
      const id = await identifyNsqd(address);
      checks.push(
        pass(
          'nsqd',
          `nsqd ${id.version ?? ''} at ${address}: msg_timeout ${formatDuration(id.msg_timeout)}, max_msg_timeout ${formatDuration(id.max_msg_timeout)}`,
        ),
      );
      for (const [kind, timeout] of [
        ['learn', options.learnTimeoutMs],
        ['predict', options.predictTimeoutMs],
      ] as const) {
        if (timeout > id.max_msg_timeout) {
          checks.push(
            warn(
              'nsqd-max-msg-timeout',
              `nsqd at ${address} keeps a message in flight at most ${formatDuration(id.max_msg_timeout)}, but ${kind} tasks may run ${formatDuration(timeout)}: a longer task is delivered again to another worker while it runs`,
              `start nsqd with --max-msg-timeout above ${formatDuration(timeout)}, or lower --${kind}-timeout`,
            ),
          );
        }
      }
    } catch (error) {
      checks.push(fail('nsqd', `cannot talk to nsqd at ${address}`, error));
    }
  }
  return checks;
}
