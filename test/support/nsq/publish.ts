import type { NsqdContext } from './connection.js';
import { type Command, fatal, goQuote, isValidName, parseBase10 } from './protocol.js';

/** PUB, MPUB and DPUB with nsqd's checks and error texts. */
export function execPublish(ctx: NsqdContext, cmd: Command): string {
  const { name, params } = cmd;
  const minParams = name === 'DPUB' ? 2 : 1;
  if (params.length < minParams) {
    throw fatal('E_INVALID', `${name} insufficient number of parameters`);
  }
  const topic = params[0] ?? '';
  if (!isValidName(topic)) {
    const prefix = name === 'MPUB' ? 'E_BAD_TOPIC ' : '';
    throw fatal('E_BAD_TOPIC', `${prefix}${name} topic name ${goQuote(topic)} is not valid`);
  }
  let deferMs = 0;
  if (name === 'DPUB') {
    const raw = params[1] ?? '';
    const ms = parseBase10(raw);
    if (ms === undefined) throw fatal('E_INVALID', `DPUB could not parse timeout ${raw}`);
    if (ms > ctx.limits.maxReqTimeoutMs) {
      throw fatal('E_INVALID', `DPUB timeout ${ms} out of range 0-${ctx.limits.maxReqTimeoutMs}`);
    }
    deferMs = ms;
  }
  const bodies = name === 'MPUB' ? readMpub(ctx, cmd) : [checkedBody(ctx, name, cmd)];
  ctx.publish(topic, bodies, deferMs);
  return 'OK';
}

function checkedBody(ctx: NsqdContext, name: string, cmd: Command): Buffer {
  const size = cmd.bodySize ?? 0;
  if (size <= 0) throw fatal('E_BAD_MESSAGE', `${name} invalid message body size ${size}`);
  if (size > ctx.limits.maxMsgSize) {
    throw fatal('E_BAD_MESSAGE', `${name} message too big ${size} > ${ctx.limits.maxMsgSize}`);
  }
  return cmd.body ?? Buffer.alloc(0);
}

function readMpub(ctx: NsqdContext, cmd: Command): Buffer[] {
  const size = cmd.bodySize ?? 0;
  const { maxBodySize, maxMsgSize } = ctx.limits;
  if (size <= 0) throw fatal('E_BAD_BODY', `MPUB invalid body size ${size}`);
  if (size > maxBodySize) throw fatal('E_BAD_BODY', `MPUB body too big ${size} > ${maxBodySize}`);
  const body = cmd.body ?? Buffer.alloc(0);
  if (body.length < 4) throw fatal('E_BAD_BODY', 'MPUB failed to read message count');
  const count = body.readInt32BE(0);
  if (count <= 0 || count > (maxBodySize - 4) / 5) {
    throw fatal('E_BAD_BODY', `MPUB invalid message count ${count}`);
  }
  const out: Buffer[] = [];
  let at = 4;
  for (let i = 0; i < count; i++) {
    if (body.length < at + 4) {
      throw fatal('E_BAD_MESSAGE', `MPUB failed to read message(${i}) body size`);
    }
    const n = body.readInt32BE(at);
    at += 4;
    if (n <= 0) throw fatal('E_BAD_MESSAGE', `MPUB invalid message(${i}) body size ${n}`);
    if (n > maxMsgSize) throw fatal('E_BAD_MESSAGE', `MPUB message too big ${n} > ${maxMsgSize}`);
    if (body.length < at + n) throw fatal('E_BAD_MESSAGE', 'MPUB failed to read message body');
    out.push(Buffer.from(body.subarray(at, at + n)));
    at += n;
  }
  return out;
}
