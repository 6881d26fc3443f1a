import { describe, expect, it } from 'vitest';
import { channelOf } from '../support/nsq/index.js';
import { compute, sleep, standIns, until, watchReader } from './nsqjs-helpers.js';

// The real nsqjs Reader against the stand-in: what a worker relies on.

const { nsqd, lookupd: startLookupd } = standIns();

describe('nsqjs Reader against the nsqd stand-in', () => {
  it('receives through a direct nsqd address and finishes', async () => {
    const n = await nsqd();
    const [id] = n.publish('train', '{"uuid":"a"}');
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress] });
    await until(() => w.messages.length === 1, 5000, 'the message');
    const m = w.messages[0];
    expect(m?.id).toBe(id);
    expect(m?.attempts).toBe(1);
    expect(m?.json()).toEqual({ uuid: 'a' });
    expect(typeof m?.timestamp).toBe('bigint');
    // the IDENTIFY answer reaches the message: nsqd's defaults
    expect(m?.msgTimeout).toBe(60_000);
    expect(m?.maxMsgTimeout).toBe(900_000);
    m?.finish();
    const s = await n.waitFor((s) => channelOf(s, 'train', 'compute')?.finishCount === 1);
    expect(channelOf(s, 'train', 'compute')).toMatchObject({ inFlight: 0, depth: 0 });
    expect(w.errors).toEqual([]);
  });

  it('finds nsqd through nsqlookupd, and polls again for a topic that appears later', async () => {
    const n = await nsqd();
    const lookupd = await startLookupd([n]);
    const w = watchReader({ lookupdHTTPAddresses: [lookupd.address] });
    await until(() => lookupd.lookups.length >= 1, 5000, 'a first lookup');
    expect(w.events.some((e) => e.name === 'nsqd_connected')).toBe(false);
    n.publish('train', 'later');
    await until(() => w.messages.length === 1, 5000, 'the message after a poll');
    expect(lookupd.lookups.length).toBeGreaterThanOrEqual(2);
    w.messages[0]?.finish();
    await n.waitFor((s) => channelOf(s, 'train', 'compute')?.finishCount === 1);
  });

  it('redelivers a requeued message with attempts 2 after the delay', async () => {
    const n = await nsqd();
    n.publish('train', 'again');
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress] });
    await until(() => w.messages.length === 1, 5000, 'the message');
    const requeuedAt = Date.now();
    w.messages[0]?.requeue(1500, false);
    await n.waitFor((s) => compute(n)?.deferred === 1 && s.running, 5000, 'a deferred message');
    await until(() => w.messages.length === 2, 6000, 'the redelivery');
    expect(Date.now() - requeuedAt).toBeGreaterThanOrEqual(1500);
    expect(w.messages[1]?.attempts).toBe(2);
    expect(w.messages[1]?.id).toBe(w.messages[0]?.id);
    expect(compute(n)?.requeueCount).toBe(1);
  });

  it('redelivers an unanswered message after msg_timeout with attempts 2', async () => {
    const n = await nsqd({ msgTimeoutMs: 1000 });
    n.publish('train', 'slow');
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress] });
    await until(() => w.messages.length === 1, 5000, 'the message');
    await until(() => w.messages.length === 2, 5000, 'the redelivery');
    const [first, second] = w.messages;
    expect(second?.attempts).toBe(2);
    expect((second?.receivedOn ?? 0) - (first?.receivedOn ?? 0)).toBeGreaterThanOrEqual(1000);
    expect(compute(n)?.timeoutCount).toBe(1);
    second?.finish();
    await n.waitFor((s) => channelOf(s, 'train', 'compute')?.finishCount === 1);
  });

  it('keeps a touched message in flight only up to max_msg_timeout', async () => {
    const n = await nsqd({ msgTimeoutMs: 2000, maxMsgTimeoutMs: 4000 });
    n.publish('train', 'long');
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress] });
    await until(() => w.messages.length === 1, 5000, 'the message');
    const first = w.messages[0];
    expect(first?.timeUntilTimeout(true)).toBeGreaterThan(3000);
    const toucher = setInterval(() => first?.touch(), 300);
    try {
      await until(() => w.messages.length === 2, 8000, 'the redelivery at the cap');
    } finally {
      clearInterval(toucher);
    }
    const held = (w.messages[1]?.receivedOn ?? 0) - (first?.receivedOn ?? 0);
    // touched every 300 ms, so only the 4 s cap can have ended the lease
    expect(held).toBeGreaterThanOrEqual(3900);
    expect(w.messages[1]?.attempts).toBe(2);
    expect(n.received.filter((c) => c.name === 'TOUCH').length).toBeGreaterThanOrEqual(8);
    // Same id on the same connection: the stale copy would touch the new
    // delivery. Once that is finished, the stale copy's touch fails.
    w.messages[1]?.finish();
    await n.waitFor((s) => channelOf(s, 'train', 'compute')?.finishCount === 1);
    first?.touch();
    await until(() => w.errors.length > 0, 3000, 'E_TOUCH_FAILED');
    expect(w.errors[0]?.message).toBe(`E_TOUCH_FAILED TOUCH ${first?.id} failed ID not in flight`);
  });

  it('respects maxInFlight', async () => {
    const n = await nsqd();
    n.publish('train', ['1', '2', '3', '4', '5']);
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress], maxInFlight: 2 });
    await until(() => w.messages.length === 2, 5000, 'two messages');
    await sleep(600); // more than the 250 ms output buffer: nothing else may come
    expect(w.messages.length).toBe(2);
    expect(compute(n)).toMatchObject({ inFlight: 2, depth: 3 });
    w.messages[0]?.finish();
    await until(() => w.messages.length === 3, 5000, 'a third after a finish');
    expect(w.messages.map((m) => m.body.toString())).toEqual(['1', '2', '3']);
  });

  it('shares one channel between two readers, each message to one of them', async () => {
    const n = await nsqd();
    const a = watchReader({ nsqdTCPAddresses: [n.tcpAddress], maxInFlight: 5 });
    const b = watchReader({ nsqdTCPAddresses: [n.tcpAddress], maxInFlight: 5 });
    for (const w of [a, b]) w.reader.on('message', (m) => m.finish());
    await n.waitFor(
      (s) => s.connections.filter((c) => c.rdy === 5).length === 2,
      5000,
      'two subscribed readers with RDY 5',
    );
    const ids = n.publish(
      'train',
      Array.from({ length: 20 }, (_, i) => `m${i}`),
    );
    await n.waitFor((s) => channelOf(s, 'train', 'compute')?.finishCount === 20, 10_000, '20 FIN');
    const got = [...a.messages, ...b.messages].map((m) => m.id);
    expect(got.sort()).toEqual([...ids].sort());
    expect(a.messages.length).toBeGreaterThan(0);
    expect(b.messages.length).toBeGreaterThan(0);
  });

  it('with several nsqd: no ready event, one nsqd_connected each, all drained', async () => {
    const [a, b] = [await nsqd(), await nsqd()];
    if (!a || !b) throw new Error('two nsqd expected');
    const lookupd = await startLookupd([a, b]);
    a.publish('train', ['a1', 'a2', 'a3']);
    b.publish('train', ['b1', 'b2', 'b3']);
    const w = watchReader({ lookupdHTTPAddresses: [lookupd.address], maxInFlight: 1 });
    w.reader.on('message', (m) => setTimeout(() => m.finish(), 20));
    await until(() => w.messages.length === 6, 10_000, 'six messages from two nsqd');
    const names = w.events.map((e) => e.name);
    expect(names.filter((e) => e === 'nsqd_connected')).toHaveLength(2);
    // reader.js emits 'ready' only while exactly one connection exists
    expect(names).not.toContain('ready');
    const bodies = w.messages.map((m) => m.body.toString()).sort();
    expect(bodies).toEqual(['a1', 'a2', 'a3', 'b1', 'b2', 'b3']);
  });
});
