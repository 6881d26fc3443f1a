import { z } from 'zod';
import type { ClientConnection } from './connection.js';
import { type Command, fatal, NSQD_VERSION } from './protocol.js';

// Go's json.Unmarshal into identifyDataV2: unknown keys ignored, null leaves
// the zero value, a wrong type fails the whole decode.
const int = z.number().int().nullish();
const identifySchema = z.object({
  client_id: z.string().nullish(),
  hostname: z.string().nullish(),
  user_agent: z.string().nullish(),
  feature_negotiation: z.boolean().nullish(),
  heartbeat_interval: int,
  output_buffer_size: int,
  output_buffer_timeout: int,
  sample_rate: int,
  msg_timeout: int,
  tls_v1: z.boolean().nullish(),
  deflate: z.boolean().nullish(),
  deflate_level: int,
  snappy: z.boolean().nullish(),
});

const MAX_OUTPUT_BUFFER_SIZE = 64 * 1024;
const MAX_OUTPUT_BUFFER_TIMEOUT_MS = 30_000;
const MAX_DEFLATE_LEVEL = 6;

/** protocolV2.IDENTIFY + clientV2.Identify, settings applied in nsqd's order. */
export function execIdentify(conn: ClientConnection, cmd: Command): string | undefined {
  if (conn.state !== 'init') throw fatal('E_INVALID', 'cannot IDENTIFY in current state');
  const limits = conn.ctx.limits;
  const size = cmd.bodySize ?? 0;
  if (size > limits.maxBodySize) {
    throw fatal('E_BAD_BODY', `IDENTIFY body too big ${size} > ${limits.maxBodySize}`);
  }
  if (size <= 0) throw fatal('E_BAD_BODY', `IDENTIFY invalid body size ${size}`);
  let raw: unknown;
  try {
    raw = JSON.parse((cmd.body ?? Buffer.alloc(0)).toString());
  } catch {
    throw fatal('E_BAD_BODY', 'IDENTIFY failed to decode JSON body');
  }
  const parsed = identifySchema.safeParse(raw);
  if (!parsed.success) throw fatal('E_BAD_BODY', 'IDENTIFY failed to decode JSON body');
  const data = parsed.data;
  conn.identity = {
    clientId: data.client_id ?? undefined,
    hostname: data.hostname ?? undefined,
    userAgent: data.user_agent ?? undefined,
  };
  const invalid = (what: string, value: number) =>
    fatal('E_BAD_BODY', `IDENTIFY ${what} (${value}) is invalid`);

  const hb = data.heartbeat_interval ?? 0;
  let heartbeat = conn.heartbeatIntervalMs;
  if (hb === -1) heartbeat = 0;
  else if (hb >= 1000 && hb <= limits.maxHeartbeatIntervalMs) heartbeat = hb;
  else if (hb !== 0) throw invalid('heartbeat interval', hb);

  const obt = data.output_buffer_timeout ?? 0;
  if (obt === -1) conn.outputBufferTimeoutMs = 0;
  else if (obt >= 1 && obt <= MAX_OUTPUT_BUFFER_TIMEOUT_MS) conn.outputBufferTimeoutMs = obt;
  else if (obt !== 0) throw invalid('output buffer timeout', obt);

  const obs = data.output_buffer_size ?? 0;
  if (obs === -1) conn.outputBufferSize = 1;
  else if (obs >= 64 && obs <= MAX_OUTPUT_BUFFER_SIZE) conn.outputBufferSize = obs;
  else if (obs !== 0) throw invalid('output buffer size', obs);

  const rate = data.sample_rate ?? 0;
  if (rate < 0 || rate > 99) throw invalid('sample rate', rate);
  conn.sampleRate = rate;

  const mt = data.msg_timeout ?? 0;
  if (mt >= 1000 && mt <= limits.maxMsgTimeoutMs) conn.msgTimeoutMs = mt;
  else if (mt !== 0) throw invalid('msg timeout', mt);

  // The message pump restarts its heartbeat ticker when IDENTIFY arrives.
  conn.setHeartbeat(heartbeat);

  if (!data.feature_negotiation) return 'OK';
  // This stand-in runs like `nsqd --deflate=false --snappy=false` without TLS,
  // so the answer never switches the connection to another encoding.
  return JSON.stringify({
    max_rdy_count: limits.maxRdyCount,
    version: NSQD_VERSION,
    max_msg_timeout: limits.maxMsgTimeoutMs,
    msg_timeout: conn.msgTimeoutMs,
    tls_v1: false,
    deflate: false,
    deflate_level: Math.min(6, MAX_DEFLATE_LEVEL),
    max_deflate_level: MAX_DEFLATE_LEVEL,
    snappy: false,
    sample_rate: conn.sampleRate,
    auth_required: false,
    output_buffer_size: conn.outputBufferSize,
    output_buffer_timeout: conn.outputBufferTimeoutMs,
  });
}
