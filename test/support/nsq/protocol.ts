// The bytes of NSQ protocol V2 as nsqd 1.3.0 writes and reads them
// (nsqd/protocol_v2.go, internal/protocol). Pure functions plus one
// incremental command parser; no sockets here.

export const MAGIC_V2 = '  V2';
export const FRAME_RESPONSE = 0;
export const FRAME_ERROR = 1;
export const FRAME_MESSAGE = 2;
export const NSQD_VERSION = '1.3.0';
export const MSG_ID_LENGTH = 16;

export interface StoredMessage {
  id: string;
  body: Buffer;
  /** Nanoseconds since the epoch, set once at publish and kept on every redelivery. */
  timestamp: bigint;
  /** Deliveries so far; the next delivery carries attempts + 1. */
  attempts: number;
}

export function frame(type: number, data: Buffer | string): Buffer {
  const payload = typeof data === 'string' ? Buffer.from(data) : data;
  const head = Buffer.alloc(8);
  head.writeUInt32BE(payload.length + 4, 0);
  head.writeUInt32BE(type, 4);
  return Buffer.concat([head, payload]);
}

export function messageFrame(msg: StoredMessage): Buffer {
  const head = Buffer.alloc(10);
  head.writeBigInt64BE(msg.timestamp, 0);
  head.writeUInt16BE(msg.attempts, 8);
  return frame(FRAME_MESSAGE, Buffer.concat([head, Buffer.from(msg.id, 'ascii'), msg.body]));
}

/** nsqd's error text: the code, a space, the description. */
export class ClientError extends Error {
  constructor(
    readonly code: string,
    readonly description: string,
    /** Fatal errors close the connection after the error frame. */
    readonly fatal: boolean,
  ) {
    super(`${code} ${description}`);
  }
}

export const fatal = (code: string, description: string) =>
  new ClientError(code, description, true);
export const nonFatal = (code: string, description: string) =>
  new ClientError(code, description, false);

const NAME = /^[.a-zA-Z0-9_-]+(#ephemeral)?$/;

/** protocol.IsValidTopicName / IsValidChannelName. */
export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= 64 && NAME.test(name);
}

/** Go's %q for the plain ASCII names that reach it. */
export function goQuote(s: string): string {
  return JSON.stringify(s);
}

/** protocol.ByteToBase10: digits only, no sign. */
export function parseBase10(raw: string): number | undefined {
  return /^[0-9]+$/.test(raw) ? Number(raw) : undefined;
}

// nsqd's guid: 41 bits of time (ns >> 20 since twepoch), 10 of node id, 12 of sequence.
const TWEPOCH = 1288834974288n;

export class IdFactory {
  private lastTs = 0n;
  private sequence = 0n;
  constructor(private readonly nodeId = BigInt(Math.floor(Math.random() * 1024))) {}

  next(): string {
    let ts = ((BigInt(Date.now()) * 1_000_000n) >> 20n) - TWEPOCH;
    if (ts <= this.lastTs) {
      ts = this.lastTs;
      this.sequence += 1n;
      if (this.sequence > 4095n) {
        ts += 1n;
        this.sequence = 0n;
      }
    } else {
      this.sequence = 0n;
    }
    this.lastTs = ts;
    const id = (ts << 22n) | (this.nodeId << 12n) | this.sequence;
    return id.toString(16).padStart(MSG_ID_LENGTH, '0');
  }
}

let lastTimestamp = 0n;
/** Unique, increasing nanosecond timestamps (Date.now() only has milliseconds). */
export function nowNanos(): bigint {
  const t = BigInt(Date.now()) * 1_000_000n;
  lastTimestamp = t > lastTimestamp ? t : lastTimestamp + 1n;
  return lastTimestamp;
}

export interface Command {
  name: string;
  params: string[];
  /** Present for the commands that carry a body; length <= 0 arrives as an empty body. */
  body?: Buffer;
  bodySize?: number;
}

const WITH_BODY = new Set(['IDENTIFY', 'PUB', 'MPUB', 'DPUB', 'AUTH']);

/**
 * Splits the client's byte stream into commands: `NAME p1 p2\n`, followed for
 * IDENTIFY, PUB, MPUB, DPUB and AUTH by a big-endian u32 size and that many bytes.
 */
export class CommandParser {
  private buf: Buffer = Buffer.alloc(0);
  private pending: { name: string; params: string[] } | undefined;

  constructor(private readonly maxBodySize: number) {}

  push(data: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
  }

  next(): Command | undefined {
    if (!this.pending) {
      const nl = this.buf.indexOf(0x0a);
      if (nl < 0) return undefined;
      let line = this.buf.subarray(0, nl).toString('latin1');
      this.buf = this.buf.subarray(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      const [name = '', ...params] = line.split(' ');
      if (!WITH_BODY.has(name)) return { name, params };
      this.pending = { name, params };
    }
    if (this.buf.length < 4) return undefined;
    const size = this.buf.readInt32BE(0);
    if (size <= 0 || size > this.maxBodySize) {
      // nsqd rejects these before reading a body; the connection closes anyway.
      const cmd = { ...this.pending, body: Buffer.alloc(0), bodySize: size };
      this.pending = undefined;
      this.buf = this.buf.subarray(4);
      return cmd;
    }
    if (this.buf.length < 4 + size) return undefined;
    const body = Buffer.from(this.buf.subarray(4, 4 + size));
    this.buf = this.buf.subarray(4 + size);
    const cmd = { ...this.pending, body, bodySize: size };
    this.pending = undefined;
    return cmd;
  }
}
