import type { Socket } from 'node:net';
import type { Channel, Consumer, Topic } from './channel.js';
import { execIdentify } from './identify.js';
import {
  ClientError,
  type Command,
  CommandParser,
  FRAME_ERROR,
  FRAME_RESPONSE,
  fatal,
  frame,
  goQuote,
  isValidName,
  MAGIC_V2,
  MSG_ID_LENGTH,
  messageFrame,
  nonFatal,
  parseBase10,
  type StoredMessage,
} from './protocol.js';
import { execPublish } from './publish.js';

export interface NsqdLimits {
  msgTimeoutMs: number;
  maxMsgTimeoutMs: number;
  maxReqTimeoutMs: number;
  heartbeatIntervalMs: number;
  maxHeartbeatIntervalMs: number;
  maxRdyCount: number;
  maxMsgSize: number;
  maxBodySize: number;
  outputBufferSize: number;
  outputBufferTimeoutMs: number;
}

/** What a connection needs from its nsqd. */
export interface NsqdContext {
  readonly limits: NsqdLimits;
  getTopic(name: string): Topic;
  publish(topic: string, bodies: Buffer[], deferMs: number): void;
  record(connectionId: number, command: Command): void;
  changed(): void;
  removeConnection(conn: ClientConnection): void;
}

export type ConnectionState = 'init' | 'subscribed' | 'closing';

/** One client connection speaking protocol V2 (nsqd/protocol_v2.go IOLoop + messagePump). */
export class ClientConnection implements Consumer {
  state: ConnectionState = 'init';
  rdy = 0;
  inFlightCount = 0;
  messageCount = 0;
  finishCount = 0;
  requeueCount = 0;
  msgTimeoutMs: number;
  heartbeatIntervalMs: number;
  outputBufferSize: number;
  outputBufferTimeoutMs: number;
  sampleRate = 0;
  identity: { clientId?: string; hostname?: string; userAgent?: string } = {};
  channel: Channel | undefined;
  readonly remotePort: number;
  private readonly parser: CommandParser;
  private magic: Buffer | undefined = Buffer.alloc(0);
  private dead = false;
  private heartbeat: NodeJS.Timeout | undefined;
  private idle: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private out: Buffer[] = [];
  private outBytes = 0;

  constructor(
    readonly id: number,
    private readonly socket: Socket,
    readonly ctx: NsqdContext,
  ) {
    const l = ctx.limits;
    this.msgTimeoutMs = l.msgTimeoutMs;
    this.heartbeatIntervalMs = l.heartbeatIntervalMs;
    this.outputBufferSize = l.outputBufferSize;
    this.outputBufferTimeoutMs = l.outputBufferTimeoutMs;
    this.parser = new CommandParser(l.maxBodySize);
    this.remotePort = socket.remotePort ?? 0;
    socket.setNoDelay(true);
    socket.on('data', (d) => this.onData(d));
    socket.on('error', () => {});
    socket.on('close', () => this.onClose());
    this.startHeartbeat();
    this.armIdle();
  }

  isReady(): boolean {
    return !this.dead && this.state === 'subscribed' && this.inFlightCount < this.rdy;
  }

  deliver(msg: StoredMessage): void {
    this.messageCount++;
    this.write(messageFrame(msg));
    // nsqd buffers message frames and flushes when the client is no longer
    // ready, the buffer fills, or the output_buffer_timeout ticker fires.
    if (this.isReady() && this.outputBufferTimeoutMs > 0 && this.outBytes < this.outputBufferSize) {
      this.flushTimer ??= setTimeout(() => this.flush(), this.outputBufferTimeoutMs);
    } else {
      this.flush();
    }
  }

  /** Drops the connection without a word, as a crashing nsqd does. */
  kill(): void {
    this.teardown();
    this.socket.destroy();
  }

  setHeartbeat(ms: number): void {
    this.heartbeatIntervalMs = ms;
    this.startHeartbeat();
  }

  private onData(data: Buffer): void {
    if (this.dead) return;
    let rest = data;
    if (this.magic) {
      this.magic = Buffer.concat([this.magic, data]);
      if (this.magic.length < 4) return;
      const magic = this.magic.subarray(0, 4).toString('latin1');
      rest = this.magic.subarray(4);
      this.magic = undefined;
      if (magic !== MAGIC_V2) {
        this.send(FRAME_ERROR, 'E_BAD_PROTOCOL');
        this.close();
        return;
      }
    }
    this.parser.push(rest);
    for (let cmd = this.parser.next(); cmd && !this.dead; cmd = this.parser.next()) {
      this.armIdle();
      this.ctx.record(this.id, cmd);
      try {
        const response = this.exec(cmd);
        if (response !== undefined) this.send(FRAME_RESPONSE, response);
      } catch (err) {
        if (!(err instanceof ClientError)) throw err;
        this.send(FRAME_ERROR, err.message);
        if (err.fatal) this.close();
      }
      this.ctx.changed();
    }
  }

  private exec(cmd: Command): string | undefined {
    switch (cmd.name) {
      case 'IDENTIFY':
        return execIdentify(this, cmd);
      case 'SUB':
        return this.sub(cmd.params);
      case 'RDY':
        return this.rdyCmd(cmd.params);
      case 'FIN':
      case 'REQ':
      case 'TOUCH':
        return this.respond(cmd.name, cmd.params);
      case 'CLS':
        if (this.state !== 'subscribed') throw fatal('E_INVALID', 'cannot CLS in current state');
        this.rdy = 0;
        this.state = 'closing';
        return 'CLOSE_WAIT';
      case 'NOP':
        return undefined;
      case 'PUB':
      case 'MPUB':
      case 'DPUB':
        return execPublish(this.ctx, cmd);
      case 'AUTH':
        if (this.state !== 'init') throw fatal('E_INVALID', 'cannot AUTH in current state');
        throw fatal('E_AUTH_DISABLED', 'AUTH disabled');
      default:
        throw fatal('E_INVALID', `invalid command ${cmd.name}`);
    }
  }

  private sub(params: string[]): string {
    if (this.state !== 'init') throw fatal('E_INVALID', 'cannot SUB in current state');
    if (this.heartbeatIntervalMs <= 0) {
      throw fatal('E_INVALID', 'cannot SUB with heartbeats disabled');
    }
    if (params.length < 2) throw fatal('E_INVALID', 'SUB insufficient number of parameters');
    const [topic = '', channel = ''] = params;
    if (!isValidName(topic)) {
      throw fatal('E_BAD_TOPIC', `SUB topic name ${goQuote(topic)} is not valid`);
    }
    if (!isValidName(channel)) {
      throw fatal('E_BAD_CHANNEL', `SUB channel name ${goQuote(channel)} is not valid`);
    }
    this.channel = this.ctx.getTopic(topic).getChannel(channel);
    this.channel.addConsumer(this);
    this.state = 'subscribed';
    return 'OK';
  }

  private rdyCmd(params: string[]): undefined {
    if (this.state === 'closing') return undefined;
    if (this.state !== 'subscribed') throw fatal('E_INVALID', 'cannot RDY in current state');
    let count = 1;
    if (params.length > 0) {
      const parsed = parseBase10(params[0] ?? '');
      if (parsed === undefined) {
        throw fatal('E_INVALID', `RDY could not parse count ${params[0]}`);
      }
      count = parsed;
    }
    const max = this.ctx.limits.maxRdyCount;
    if (count > max) throw fatal('E_INVALID', `RDY count ${count} out of range 0-${max}`);
    this.rdy = count;
    return undefined;
  }

  private respond(name: 'FIN' | 'REQ' | 'TOUCH', params: string[]): undefined {
    if (this.state !== 'subscribed' && this.state !== 'closing') {
      throw fatal('E_INVALID', `cannot ${name} in current state`);
    }
    if (params.length < (name === 'REQ' ? 2 : 1)) {
      throw fatal('E_INVALID', `${name} insufficient number of params`);
    }
    const id = params[0] ?? '';
    if (Buffer.byteLength(id, 'latin1') !== MSG_ID_LENGTH) {
      throw fatal('E_INVALID', 'Invalid Message ID');
    }
    const channel = this.channel as Channel;
    if (name === 'FIN') {
      const err = channel.finish(this, id);
      if (err) throw nonFatal('E_FIN_FAILED', `FIN ${id} failed ${err}`);
      this.finishCount++;
    } else if (name === 'REQ') {
      const raw = params[1] ?? '';
      const ms = parseBase10(raw);
      if (ms === undefined) throw fatal('E_INVALID', `REQ could not parse timeout ${raw}`);
      const err = channel.requeue(this, id, Math.min(ms, this.ctx.limits.maxReqTimeoutMs));
      if (err) throw nonFatal('E_REQ_FAILED', `REQ ${id} failed ${err}`);
      this.requeueCount++;
    } else {
      const err = channel.touch(this, id);
      if (err) throw nonFatal('E_TOUCH_FAILED', `TOUCH ${id} failed ${err}`);
    }
    return undefined;
  }

  private send(type: number, data: string | Buffer): void {
    this.write(frame(type, data));
    this.flush();
  }

  private write(buf: Buffer): void {
    this.out.push(buf);
    this.outBytes += buf.length;
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.out.length === 0 || this.socket.destroyed) return;
    this.socket.write(Buffer.concat(this.out));
    this.out = [];
    this.outBytes = 0;
  }

  private startHeartbeat(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    if (this.heartbeatIntervalMs > 0) {
      this.heartbeat = setInterval(
        () => this.send(FRAME_RESPONSE, '_heartbeat_'),
        this.heartbeatIntervalMs,
      );
    }
  }

  /** IOLoop's read deadline: two heartbeat intervals without a command closes the connection. */
  private armIdle(): void {
    clearTimeout(this.idle);
    this.idle = undefined;
    if (this.heartbeatIntervalMs > 0) {
      this.idle = setTimeout(() => this.close(), this.heartbeatIntervalMs * 2);
    }
  }

  /** conn.Close() after the last frame went out. */
  private close(): void {
    if (this.dead) return;
    this.flush();
    this.teardown();
    this.socket.end(() => this.socket.destroy());
  }

  private teardown(): void {
    if (this.dead) return;
    this.dead = true;
    clearInterval(this.heartbeat);
    clearTimeout(this.idle);
    clearTimeout(this.flushTimer);
    this.channel?.removeConsumer(this);
    this.ctx.removeConnection(this);
  }

  private onClose(): void {
    if (this.dead) return;
    this.teardown();
    this.ctx.changed();
  }
}
