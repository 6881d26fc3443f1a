import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { Writer } from 'nsqjs';
import { describe, expect, it } from 'vitest';
import { RawNsqClient } from '../support/nsq/index.js';
import { compute, sleep, standIns, until, watchReader } from './nsqjs-helpers.js';

// Connection life with the real nsqjs: heartbeats, rejection, restarts, lost leases.

const { nsqd, lookupd: startLookupd } = standIns();

describe('nsqjs connections to the nsqd stand-in', () => {
  it('keeps a connection alive over several heartbeats answered by nsqjs', async () => {
    const n = await nsqd();
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress], heartbeatInterval: 1 });
    const s = await n.waitFor((s) => s.connections[0]?.rdy === 1, 5000, 'a subscribed reader');
    expect(s.connections[0]?.heartbeatIntervalMs).toBe(1000);
    const conn = s.connections[0]?.id;
    await sleep(3500);
    expect(w.events.map((e) => e.name)).not.toContain('nsqd_closed');
    const nops = n.received.filter((c) => c.connectionId === conn && c.name === 'NOP');
    expect(nops.length).toBeGreaterThanOrEqual(2);
    n.publish('train', 'still there');
    await until(() => w.messages.length === 1, 5000, 'a message after the heartbeats');
  });

  it('closes a connection that stays silent for two heartbeat intervals', async () => {
    const n = await nsqd();
    const c = await RawNsqClient.connect(n.tcpPort, { autoNop: false });
    c.send('IDENTIFY', JSON.stringify({ heartbeat_interval: 1000 }));
    expect((await c.next()).data).toBe('OK');
    c.send('SUB train compute');
    expect((await c.next()).data).toBe('OK');
    const closedAfter = await c.closedAt;
    expect(closedAfter).toBeGreaterThanOrEqual(1900);
    expect(c.frames.filter((f) => f.data === '_heartbeat_').length).toBeGreaterThanOrEqual(1);
  });

  it('rejects a msg_timeout above max_msg_timeout, and nsqjs keeps retrying', async () => {
    const n = await nsqd({ maxMsgTimeoutMs: 6000 });
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress], messageTimeout: 7000 });
    await until(() => w.errors.length >= 2, 8000, 'two rejected connection attempts');
    expect(w.errors[0]?.message).toBe('E_BAD_BODY IDENTIFY msg timeout (7000) is invalid');
    expect(w.events.map((e) => e.name)).toContain('nsqd_closed');
    expect(w.events.map((e) => e.name)).not.toContain('ready');
  });

  it('after an nsqd crash and restart on the same port, nsqjs reconnects by itself', async () => {
    const n = await nsqd();
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress] });
    n.publish('train', 'before');
    await until(() => w.messages.length === 1, 5000, 'the first message');
    // left unanswered: a crash loses what is in flight
    await n.restart({ downMs: 300 });
    expect(compute(n)).toMatchObject({ depth: 0, inFlight: 0 });
    await n.waitFor((s) => s.connections[0]?.rdy === 1, 8000, 'nsqjs back and subscribed');
    expect(w.events.map((e) => e.name)).toContain('nsqd_closed');
    n.publish('train', 'after');
    await until(() => w.messages.length === 2, 5000, 'a message after the restart');
    expect(w.messages[1]?.body.toString()).toBe('after');
  });

  it('after a clean restart, found again through nsqlookupd, in-flight work comes back', async () => {
    const n = await nsqd();
    const lookupd = await startLookupd([n]);
    n.publish('train', 'kept');
    const w = watchReader({ lookupdHTTPAddresses: [lookupd.address] });
    await until(() => w.messages.length === 1, 5000, 'the message');
    await n.restart({ clean: true, downMs: 300 });
    await until(() => w.messages.length === 2, 8000, 'the message after the restart');
    expect(w.messages[1]?.id).toBe(w.messages[0]?.id);
    expect(w.messages[1]?.attempts).toBe(2);
  });

  it('treats a lost connection as a lost lease', async () => {
    const n = await nsqd({ msgTimeoutMs: 1000 });
    const [id] = n.publish('train', 'leased');
    const a = watchReader({ nsqdTCPAddresses: [n.tcpAddress] });
    await until(() => a.messages.length === 1, 5000, 'the message');
    a.reader.close();
    await n.waitFor((s) => s.connections.length === 0, 5000, 'the reader gone');
    // finish() on the dead connection neither throws nor reports anything
    a.messages[0]?.finish();
    await sleep(100);
    expect(a.errors).toEqual([]);
    expect(compute(n)).toMatchObject({ inFlight: 1, finishCount: 0 });
    // another connection cannot answer for it
    const raw = await RawNsqClient.connect(n.tcpPort);
    raw.send('SUB train compute');
    await raw.next();
    raw.send(`FIN ${id}`);
    expect((await raw.next()).data).toBe(
      `E_FIN_FAILED FIN ${id} failed client does not own message`,
    );
    raw.close();
    // after msg_timeout it goes to whoever is subscribed
    const b = watchReader({ nsqdTCPAddresses: [n.tcpAddress] });
    await until(() => b.messages.length === 1, 5000, 'the redelivery');
    expect(b.messages[0]?.id).toBe(id);
    expect(b.messages[0]?.attempts).toBe(2);
  });

  it('accepts PUB and MPUB from the nsqjs Writer', async () => {
    const n = await nsqd();
    const writer = new Writer(n.host, n.tcpPort);
    writer.on('error', () => {});
    writer.connect();
    await once(writer, 'ready');
    await new Promise<void>((resolve, reject) =>
      writer.publish('train', 'one', (err) => (err ? reject(err) : resolve())),
    );
    await new Promise<void>((resolve, reject) =>
      writer.publish('train', ['two', 'three'], (err) => (err ? reject(err) : resolve())),
    );
    writer.close();
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress], maxInFlight: 3 });
    await until(() => w.messages.length === 3, 5000, 'three messages');
    expect(w.messages.map((m) => m.body.toString())).toEqual(['one', 'two', 'three']);
  });
});

describe('nsqlookupd stand-in HTTP answers', () => {
  const traces = JSON.parse(
    readFileSync(new URL('./fixtures/nsq-traces.json', import.meta.url), 'utf8'),
  ) as { lookup_200: { producers: Record<string, unknown>[] }; lookup_404: unknown };

  it('answers /lookup like nsqlookupd 1.3.0', async () => {
    const n = await nsqd();
    const lookupd = await startLookupd([n]);
    const base = `http://${lookupd.address}`;
    const missing = await fetch(`${base}/lookup?topic=train`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual(traces.lookup_404);
    n.publish('train', 'x');
    const found = await fetch(`${base}/lookup?topic=train`);
    expect(found.status).toBe(200);
    const body = (await found.json()) as { channels: string[]; producers: object[] };
    expect(Object.keys(body)).toEqual(['channels', 'producers']);
    expect(body.channels).toEqual([]);
    const expectedKeys = Object.keys(traces.lookup_200.producers[0] ?? {});
    expect(Object.keys(body.producers[0] ?? {})).toEqual(expectedKeys);
    expect(body.producers[0]).toMatchObject({
      broadcast_address: '127.0.0.1',
      tcp_port: n.tcpPort,
      http_port: n.httpPort,
      version: '1.3.0',
    });
    expect(await (await fetch(`${base}/ping`)).text()).toBe('OK');
    await n.stop();
    expect((await fetch(`${base}/lookup?topic=train`)).status).toBe(404);
  });
});
