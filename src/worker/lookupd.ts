import { request } from 'undici';

/** An nsqd that nsqlookupd knows for a topic (nsqlookupd's /lookup answer). */
export interface Producer {
  broadcast_address?: string;
  hostname?: string;
  tcp_port: number;
}

/** The /lookup URL of a topic, from host:port or a URL, as nsqjs builds it. */
export function lookupUrl(endpoint: string, topic: string): URL {
  const url = new URL(endpoint.includes('://') ? endpoint : `http://${endpoint}`);
  if (!url.pathname || url.pathname === '/') url.pathname = '/lookup';
  url.searchParams.set('topic', topic);
  return url;
}

/**
 * The nsqd an nsqlookupd knows for `topic`. nsqjs asks the same, but swallows every
 * failure (an unreachable nsqlookupd is silence, even at debug), so the worker asks it
 * itself and can say when it is down. A 404 is nsqlookupd's answer for a topic that no
 * nsqd has yet: none, not a failure.
 */
export async function lookupProducers(
  endpoint: string,
  topic: string,
  timeoutMs = 5_000,
): Promise<Producer[]> {
  const res = await request(lookupUrl(endpoint, topic), {
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });
  const text = await res.body.text();
  if (res.statusCode === 404) return [];
  if (res.statusCode !== 200) throw new Error(`/lookup answered ${res.statusCode}`);
  let body: { producers?: Producer[]; data?: { producers?: Producer[] } };
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error('/lookup answered something that is not JSON');
  }
  // nsq before 1.0 wrapped the answer in "data".
  return body.producers ?? body.data?.producers ?? [];
}
