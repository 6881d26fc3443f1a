/**
 * Stand-ins for nsqd 1.3.0 (TCP protocol V2 + a little HTTP) and nsqlookupd
 * (HTTP /lookup), on 127.0.0.1, faithful enough for the real nsqjs client.
 *
 *   const nsqd = await startNsqd({ msgTimeoutMs: 1000, maxMsgTimeoutMs: 3000 });
 *   const lookupd = await startNsqlookupd({ nsqds: [nsqd] });
 *   // worker: --nsqlookupd-urls lookupd.address  or  --nsqd-tcp-addresses nsqd.tcpAddress
 *   nsqd.publish('train', JSON.stringify(task));
 *   await nsqd.waitFor((s) => channelOf(s, 'train', 'compute')?.finishCount === 1);
 *   await nsqd.restart({ downMs: 500 });          // crash: in-flight and queued lost
 *   await nsqd.restart({ clean: true });          // clean: every message kept
 *   await nsqd.stop(); await lookupd.stop();
 *
 * `nsqd.received` logs every command (TOUCH, FIN, REQ...) with its connection id.
 */
export type { DeliveryRecord } from './channel.js';
export {
  Nsqd,
  type NsqdOptions,
  type NsqdSnapshot,
  type ReceivedCommand,
  startNsqd,
} from './nsqd.js';
export { Nsqlookupd, startNsqlookupd } from './nsqlookupd.js';
export { type RawFrame, RawNsqClient } from './raw-client.js';
export {
  type ChannelStats,
  type ConnectionStats,
  channelOf,
  type NsqdStats,
  type TopicStats,
} from './stats.js';
