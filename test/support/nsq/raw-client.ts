import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { FRAME_ERROR, FRAME_MESSAGE, FRAME_RESPONSE, MAGIC_V2 } from './protocol.js';

export interface RawFrame {
  type: 'response' | 'error' | 'message';
  /** Response and error text; for a message, its body. */
  data: string;
  message?: { timestamp: bigint; attempts: number; id: string; body: string };
  /** Milliseconds since connect. */
  t: number;
}

/**
 * A bare protocol V2 client for checking an nsqd byte by byte: it sends what
 * it is told and hands back the frames it receives, in order.
 */
export class RawNsqClient {
  readonly frames: RawFrame[] = [];
  closed = false;
  readonly closedAt: Promise<number>;
  private buf: Buffer = Buffer.alloc(0);
  private readonly t0 = Date.now();
  private readonly waiters: (() => void)[] = [];
  private consumed = 0;

  private constructor(
    private readonly socket: Socket,
    /** Answer `_heartbeat_` with NOP, as every client library does. */
    private readonly autoNop: boolean,
  ) {
    socket.on('data', (d) => this.onData(d));
    socket.on('error', () => {});
    this.closedAt = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        this.wake();
        resolve(Date.now() - this.t0);
      }),
    );
  }

  static async connect(
    port: number,
    opts: { magic?: string | false; autoNop?: boolean } = {},
  ): Promise<RawNsqClient> {
    const socket = connect({ host: '127.0.0.1', port });
    await once(socket, 'connect');
    socket.setNoDelay(true);
    const client = new RawNsqClient(socket, opts.autoNop ?? true);
    if (opts.magic !== false) socket.write(opts.magic ?? MAGIC_V2);
    return client;
  }

  /** Sends `line\n`, then `[u32 size][body]` when a body is given. */
  send(line: string, body?: string | Buffer): void {
    const parts: Buffer[] = [Buffer.from(`${line}\n`)];
    if (body !== undefined) {
      const b = typeof body === 'string' ? Buffer.from(body) : body;
      const size = Buffer.alloc(4);
      size.writeUInt32BE(b.length, 0);
      parts.push(size, b);
    }
    this.socket.write(Buffer.concat(parts));
  }

  /** The next frame not yet returned; rejects when none comes within `timeoutMs`. */
  async next(timeoutMs = 5000, skipHeartbeats = true): Promise<RawFrame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.consumed < this.frames.length) {
        const f = this.frames[this.consumed++] as RawFrame;
        if (!(skipHeartbeats && f.type === 'response' && f.data === '_heartbeat_')) return f;
      }
      if (this.closed) throw new Error('connection closed before the next frame');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(data: Buffer): void {
    this.buf = Buffer.concat([this.buf, data]);
    while (this.buf.length >= 8) {
      const size = this.buf.readUInt32BE(0);
      if (this.buf.length < 4 + size) break;
      const type = this.buf.readUInt32BE(4);
      const payload = this.buf.subarray(8, 4 + size);
      this.buf = this.buf.subarray(4 + size);
      this.frames.push(parseFrame(type, payload, Date.now() - this.t0));
      if (this.autoNop && type === FRAME_RESPONSE && payload.toString() === '_heartbeat_') {
        this.send('NOP');
      }
    }
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

function parseFrame(type: number, payload: Buffer, t: number): RawFrame {
  if (type === FRAME_MESSAGE) {
    const message = {
      timestamp: payload.readBigInt64BE(0),
      attempts: payload.readUInt16BE(8),
      id: payload.subarray(10, 26).toString('ascii'),
      body: payload.subarray(26).toString(),
    };
    return { type: 'message', data: message.body, message, t };
  }
  return { type: type === FRAME_ERROR ? 'error' : 'response', data: payload.toString(), t };
}
