import { type Message, Reader, type ReaderConnectionConfigOptions } from 'nsqjs';

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

/** Polls `cond` until true; the failure names what was awaited. */
export async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
