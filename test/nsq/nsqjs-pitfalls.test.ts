import { describe, expect, it } from 'vitest';
import { compute, sleep, standIns, until, watchReader } from './nsqjs-helpers.js';

// nsqjs 0.13 behaviours a worker must work around, shown against the stand-in.
// Should nsqjs change, these fail and say which workaround can go.

const { nsqd } = standIns();

describe('nsqjs 0.13 pitfalls', () => {
  it('a failed connection attempt to one nsqd takes a live connection out of pause() and close()', async () => {
    const a = await nsqd();
    const b = await nsqd();
    const w = watchReader({ nsqdTCPAddresses: [a.tcpAddress, b.tcpAddress], maxInFlight: 4 });
    w.reader.on('message', (m) => m.finish());
    await until(() => w.reader.readerRdy.connections.length === 2, 5000, 'two connections');
    await b.stop();
    // readerrdy.js removeConnection splices index -1 for a connection that
    // never got ready: each refused retry of b drops the live a from the list
    await until(
      () => w.errors.some((e) => /ECONNREFUSED/.test(e.message)),
      5000,
      'a refused retry',
    );
    expect(w.reader.readerRdy.connections).toHaveLength(0);
    w.reader.pause();
    w.reader.close();
    await sleep(300);
    const s = a.stats();
    expect(s.connections).toHaveLength(1);
    expect(s.connections[0]?.rdy).toBeGreaterThan(0);
    a.publish('train', 'after close');
    await until(() => w.messages.length === 1, 5000, 'a message after close()');
  });

  it('a stale copy of a redelivered message answers for the new delivery', async () => {
    const n = await nsqd({ msgTimeoutMs: 1000 });
    n.publish('train', 'twice');
    const w = watchReader({ nsqdTCPAddresses: [n.tcpAddress] });
    await until(() => w.messages.length === 2, 6000, 'a redelivery to the same connection');
    const [stale, fresh] = w.messages;
    expect(fresh?.attempts).toBe(2);
    stale?.finish(); // same id, same connection: nsqd takes it as the new delivery's FIN
    await n.waitFor((s) => (compute(n)?.finishCount ?? 0) === 1 && s.running, 3000, 'FIN');
    fresh?.finish();
    await until(() => w.errors.length === 1, 3000, 'the error for the second FIN');
    expect(w.errors[0]?.message).toBe(`E_FIN_FAILED FIN ${fresh?.id} failed ID not in flight`);
  });
});
