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
