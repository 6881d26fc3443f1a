import { afterEach, describe, expect, it } from 'vitest';
import { type Nsqd, RawNsqClient, startNsqd } from '../support/nsq/index.js';

// nsqd 1.3.0 answers to misuse (protocol_v2.go): fatal errors close the connection.

let nsqd: Nsqd | undefined;
afterEach(async () => {
  await nsqd?.stop();
  nsqd = undefined;
});

async function client(): Promise<RawNsqClient> {
  nsqd ??= await startNsqd();
  return RawNsqClient.connect(nsqd.tcpPort);
}

describe('protocol errors', () => {
  it('refuses a wrong magic', async () => {
    nsqd = await startNsqd();
    const c = await RawNsqClient.connect(nsqd.tcpPort, { magic: '  V1' });
    expect(await c.next()).toMatchObject({ type: 'error', data: 'E_BAD_PROTOCOL' });
    await c.closedAt;
  });

  it('answers IDENTIFY without feature negotiation with OK', async () => {
    const c = await client();
    c.send('IDENTIFY', JSON.stringify({ client_id: 'x', msg_timeout: 5000 }));
    expect(await c.next()).toMatchObject({ type: 'response', data: 'OK' });
    expect(nsqd?.stats().connections[0]).toMatchObject({ clientId: 'x', msgTimeoutMs: 5000 });
  });

  it('closes on a RDY above max_rdy_count', async () => {
    const c = await client();
    c.send('SUB train compute');
    await c.next();
    c.send('RDY 2501');
    expect((await c.next()).data).toBe('E_INVALID RDY count 2501 out of range 0-2500');
    await c.closedAt;
  });

  it('closes on a second SUB and on SUB without heartbeats', async () => {
    const c = await client();
    c.send('SUB train compute');
    await c.next();
    c.send('SUB train other');
    expect((await c.next()).data).toBe('E_INVALID cannot SUB in current state');
    await c.closedAt;
    const d = await client();
    d.send('IDENTIFY', JSON.stringify({ heartbeat_interval: -1 }));
    await d.next();
    d.send('SUB train compute');
    expect((await d.next()).data).toBe('E_INVALID cannot SUB with heartbeats disabled');
    await d.closedAt;
  });

  it('sends nothing more after CLS and answers REQ of an unknown id without closing', async () => {
    const c = await client();
    c.send('SUB train compute');
    await c.next();
    c.send('REQ 0000000000000000 0');
    expect((await c.next()).data).toBe('E_REQ_FAILED REQ 0000000000000000 failed ID not in flight');
    c.send('CLS');
    expect((await c.next()).data).toBe('CLOSE_WAIT');
    c.send('RDY 5');
    nsqd?.publish('train', 'not for a closing client');
    await expect(c.next(600)).rejects.toThrow(/no frame/);
    expect(c.closed).toBe(false);
  });
});
