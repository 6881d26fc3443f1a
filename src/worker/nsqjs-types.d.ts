// @types/nsqjs 0.12 lags nsqjs 0.13 (node_modules/nsqjs/lib). These merge the
// missing members into its declarations; each is read from the library source.
import 'nsqjs';

declare module 'nsqjs' {
  interface Message {
    /** Date.now() when the frame arrived (message.js constructor). */
    readonly receivedOn: number;
    /** Date.now() of the last touch(), receivedOn before any. */
    readonly lastTouched: number;
    readonly touchCount: number;
    /** True once nsqjs computed the soft or hard deadline as passed; only set while unanswered. */
    readonly timedOut: boolean;
    /** msg_timeout of the IDENTIFY answer of the connection that delivered it (ms). */
    readonly msgTimeout: number;
    /** max_msg_timeout of that IDENTIFY answer (ms): the cap touch() cannot pass. */
    readonly maxMsgTimeout: number;
    /** Reader option requeueDelay: the default delay of requeue() (ms). */
    readonly requeueDelay: number;
  }

  interface ConnectionConfigOptions {
    key?: Buffer | undefined;
    cert?: Buffer | undefined;
    ca?: Buffer | undefined;
  }

  /** One nsqd connection as nsqjs keeps it (nsqdconnection.js); internal, read only. */
  interface NsqdConnectionInternals {
    readonly nsqdHost: string;
    readonly nsqdPort: number;
    /** From the IDENTIFY answer; 0 until it arrives. */
    readonly maxRdyCount: number;
    readonly msgTimeout: number;
    readonly maxMsgTimeout: number;
    readonly nsqdVersion: string | null;
    id(): string;
  }

  /** RDY bookkeeping of one connection (readerrdy.js ConnectionRdy); internal, read only. */
  interface ConnectionRdyInternals {
    readonly conn: NsqdConnectionInternals;
    /** Messages received and not yet finished or requeued; timeouts do not lower it. */
    readonly inFlight: number;
    readonly lastRdySent: number;
    readonly maxConnRdy: number;
  }

  interface Reader {
    /** host:port of connections opened and not yet closed (reader.js). */
    readonly connectionIds: string[];
    readonly isClosed: boolean;
    /** Connections that passed SUB; internal, read only. */
    readonly readerRdy: {
      readonly connections: ConnectionRdyInternals[];
      readonly current_state_name: string;
      inFlight(): number;
    };
  }
}
