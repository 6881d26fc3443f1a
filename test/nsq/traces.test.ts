import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { type Nsqd, RawNsqClient, startNsqd } from '../support/nsq/index.js';

// Conversations recorded against a real nsqd 1.3.0; the stand-in must answer the same way.
const entry = z.object({
  t_ms: z.number().optional(),
  send: z.string().optional(),
  body: z.string().optional(),
  recv: z.enum(['response', 'error', 'message']).optional(),
  data: z.string().optional(),
  attempts: z.number().optional(),
  id: z.string().optional(),
  timestamp_ns: z.string().optional(),
  event: z.string().optional(),
});
const traces = z
  .object({ conversations: z.array(z.object({ name: z.string(), log: z.array(entry) })) })
  .parse(JSON.parse(readFileSync(new URL('./fixtures/nsq-traces.json', import.meta.url), 'utf8')));

type Entry = z.infer<typeof entry>;

// The first conversation ran with nsqd's defaults; the others with
// --msg-timeout=2s --max-msg-timeout=6s (the trace's "about").
const setups: Record<string, { msgTimeoutMs: number; maxMsgTimeoutMs: number }> = {
  'identify, sub, touch, requeue, fin': { msgTimeoutMs: 5000, maxMsgTimeoutMs: 900_000 },
};
const shortTimeouts = { msgTimeoutMs: 2000, maxMsgTimeoutMs: 6000 };

async function replay(name: string, log: Entry[]): Promise<void> {
  const nsqd = await startNsqd(setups[name] ?? shortTimeouts);
  try {
    await converse(nsqd, name, log);
  } finally {
    await nsqd.stop();
  }
}

async function converse(nsqd: Nsqd, name: string, log: Entry[]): Promise<void> {
  const bodies = [...new Set(log.filter((e) => e.recv === 'message').map((e) => e.body ?? ''))];
  if (bodies.length > 0) nsqd.publish('train', bodies);
  const client = await RawNsqClient.connect(nsqd.tcpPort);
  const start = Date.now();
  const ids = new Map<string, string>();
  const stamps = new Map<string, bigint>();
  const mapIds = (s: string) => s.replace(/[0-9a-f]{16}/g, (id) => ids.get(id) ?? id);
  let serverClosed = false;

  for (const e of log) {
    if (e.send === 'NOP') continue; // answered to heartbeats by the client itself
    if (e.send !== undefined) {
      const wait = (e.t_ms ?? 0) - (Date.now() - start);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      client.send(mapIds(e.send), e.body);
    } else if (e.recv === 'response' && e.data === '_heartbeat_') {
      // checked below: heartbeats interleave with other frames by timing only
    } else if (e.recv !== undefined) {
      const f = await client.next(Math.max(5000, (e.t_ms ?? 0) + 3000 - (Date.now() - start)));
      expect(f.type, `${name}: frame ${JSON.stringify(e)}`).toBe(e.recv);
      // Nothing may arrive earlier than nsqd sent it (timeouts, the touch cap).
      if (e.t_ms !== undefined) expect(f.t).toBeGreaterThanOrEqual(e.t_ms - 500);
      if (e.recv === 'message') {
        const m = f.message;
        if (!m || !e.id) throw new Error('message frame expected');
        expect(m.id).toMatch(/^[0-9a-f]{16}$/);
        if (!ids.has(e.id)) ids.set(e.id, m.id);
        expect(m.id).toBe(ids.get(e.id));
        expect(m.attempts).toBe(e.attempts);
        expect(m.body).toBe(e.body);
        // the timestamp is the publish time and survives redelivery
        expect(m.timestamp).toBe(stamps.get(m.id) ?? m.timestamp);
        stamps.set(m.id, m.timestamp);
      } else {
        expect(f.data).toBe(mapIds(e.data ?? ''));
      }
      if (f.type === 'error' && f.data.startsWith('E_BAD_BODY')) serverClosed = true;
    } else if (e.event) {
      if (serverClosed) {
        // a fatal error: nsqd closes the connection by itself
        await client.closedAt;
      } else {
        // the recording client hung up at t_ms; till then the connection must live
        const wait = (e.t_ms ?? 0) - 100 - (Date.now() - start);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        expect(client.closed).toBe(false);
        client.close();
      }
    }
  }
  const expectedBeats = log.filter((e) => e.data === '_heartbeat_').length;
  const beats = client.frames.filter((f) => f.data === '_heartbeat_');
  expect(beats.length).toBeGreaterThanOrEqual(Math.max(0, expectedBeats - 1));
  client.close();
}

describe('the stand-in answers like the recorded nsqd 1.3.0', () => {
  for (const c of traces.conversations) {
    it.concurrent(c.name, async () => {
      await replay(c.name, c.log);
    }, 30_000);
  }
});
