import { type Message, Reader, type ReaderConnectionConfigOptions } from 'nsqjs';
import { afterEach } from 'vitest';
import {
  type ChannelStats,
  channelOf,
  type Nsqd,
  type NsqdOptions,
  type Nsqlookupd,
  startNsqd,
  startNsqlookupd,
} from '../support/nsq/index.js';
import { until as pollUntil } from '../support/until.js';

/** A real nsqjs Reader with everything it emits written down. */
export interface Watched {
  reader: Reader;
  messages: Message[];
  errors: Error[];
  events: { name: string; at: number }[];
}

const open: Reader[] = [];

export function watchReader(
  options: ReaderConnectionConfigOptions,
  topic = 'train',
  channel = 'compute',
): Watched {
  const reader = new Reader(topic, channel, { lookupdPollInterval: 1, ...options });
  const w: Watched = { reader, messages: [], errors: [], events: [] };
  reader.on('message', (m) => w.messages.push(m));
  // Without an error listener nsqjs's E_*_FAILED errors would crash the process.
  reader.on('error', (e) => w.errors.push(e));
  for (const name of ['ready', 'not_ready', 'nsqd_connected', 'nsqd_closed'] as const) {
    reader.on(name as 'ready', () => w.events.push({ name, at: Date.now() }));
  }
  reader.connect();
  open.push(reader);
  return w;
}

export function closeReaders(): void {
  for (const r of open.splice(0)) r.close();
}

/** Polls every 20 ms: nsqjs's timings in these tests are tens of milliseconds. */
export const until = (cond: () => boolean, timeoutMs: number, what: string) =>
  pollUntil(cond, timeoutMs, what, 20);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Stand-ins for one test file, stopped with every open reader after each test. */
export function standIns() {
  const stopping: { stop(): Promise<unknown> }[] = [];
  afterEach(async () => {
    closeReaders();
    await Promise.all(stopping.splice(0).map((s) => s.stop()));
  });
  return {
    async nsqd(opts: NsqdOptions = {}): Promise<Nsqd> {
      const n = await startNsqd(opts);
      stopping.push(n);
      return n;
    },
    async lookupd(nsqds: Nsqd[]): Promise<Nsqlookupd> {
      const l = await startNsqlookupd({ nsqds });
      stopping.push(l);
      return l;
    },
  };
}

/** The stats of channel compute of topic train, where every test works. */
export const compute = (n: Nsqd): ChannelStats | undefined =>
  channelOf(n.stats(), 'train', 'compute');
