/**
 * NSQ addresses, checked when the worker starts: nsqjs would take a malformed one and
 * fail later in its own words (an uncaught "Invalid URL", or a connection retried for
 * ever).
 */

const HOST_PORT = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;

/** HOST:PORT, or an error saying what is wrong with it; `expected` ends the message. */
function checkHostPort(text: string, expected: string): string {
  const match = HOST_PORT.exec(text);
  if (!match) {
    const why = /^[^:/]+$/.test(text) ? 'the port is missing' : 'it is not HOST:PORT';
    throw new Error(`"${text}": ${why}; expected ${expected}`);
  }
  const port = Number(match[1]);
  if (port < 1 || port > 65_535)
    throw new Error(`"${text}": the port ${port} is not between 1 and 65535`);
  return text;
}

/** host:port of an nsqd's TCP port. */
export function parseNsqdAddress(input: string): string {
  const text = input.trim();
  if (text.includes('://'))
    throw new Error(`"${text}": nsqd's TCP address is HOST:PORT (e.g. 10.0.0.5:4150), not a URL`);
  return checkHostPort(text, 'HOST:PORT (e.g. 10.0.0.5:4150)');
}

/** host:port or an http(s) URL of an nsqlookupd's HTTP port. */
export function parseLookupdAddress(input: string): string {
  const text = input.trim();
  const expected = 'HOST:PORT or a URL (e.g. 10.0.0.5:4161, http://lookupd:4161)';
  if (!text.includes('://')) return checkHostPort(text, expected);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`"${text}": not a URL; expected ${expected}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new Error(`"${text}": nsqlookupd answers over http or https, not ${url.protocol}`);
  if (!url.hostname) throw new Error(`"${text}": the URL names no host`);
  return text;
}
