import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, type Dispatcher, request } from 'undici';
import { cleanLine } from '../config/text.js';
import { type ErrorCode, WorkerError } from '../errors.js';

/**
 * The HTTP plumbing shared by the storage and orchestrator clients: one keep-alive
 * connection pool per service, Basic Auth, idle timeouts, total deadlines, capped
 * answers, and the mapping of every failure to a WorkerError that says whether trying
 * again later can help.
 *
 * A service is not trusted to be small or quick: a JSON answer is read up to
 * `maxJsonBytes`, an error answer's body up to a few KiB, and every call ends by its
 * deadline even when bytes keep dripping in (each byte resets the silence timeout).
 */

export type ServiceName = 'storage' | 'orchestrator';

export interface HttpServiceOptions {
  host: string;
  port: number;
  user: string;
  password: string;
  /** Connect timeout, and the longest silence while waiting for or reading an answer. */
  timeoutMs?: number;
  /** Tries of a GET that failed in a way that may pass (default 3); POSTs are sent once. */
  getAttempts?: number;
  /** Pause before the second try, quadrupled for each further one (default 250 ms). */
  retryDelayMs?: number;
  /**
   * Total deadline of one call, whatever arrives meanwhile (default 2 minutes, at least
   * twice `timeoutMs`). A blob transfer gets this plus the time its bytes take at
   * `minTransferRate`.
   */
  deadlineMs?: number;
  /** The slowest average a blob transfer may keep, in bytes a second (default 256 KiB/s). */
  minTransferRate?: number;
  /** Cap of a JSON answer, counted while it is read (default 1 MiB). */
  maxJsonBytes?: number;
  /** Told of each try that failed by the service's doing (the worker's metrics count them). */
  onError?: ServiceErrorListener;
}

/**
 * `code`: the HTTP status a service answered with ("503"), or one of SERVICE_ERROR_KINDS
 * when it gave no usable answer.
 */
export type ServiceErrorListener = (service: ServiceName, code: string) => void;

/** The failures without an HTTP status, known in advance. */
export const SERVICE_ERROR_KINDS = ['connection', 'timeout', 'tls', 'bad_answer'] as const;

/** What a service answered one call with the worker's credentials, and without any. */
export interface CredentialAnswers {
  ours: number;
  without: number;
}

export interface HttpCall {
  method: 'GET' | 'POST';
  /** Path and query, e.g. `/model?uuid=...&algo=...`. */
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer | Readable;
  signal?: AbortSignal;
  /** The status codes that mean success. */
  ok: readonly number[];
  /** What is asked for, as a person names it ("data 4b6f..."): used when the service has none. */
  what?: string;
  /**
   * Marks a blob transfer: the bytes it moves so far (an upload's size, a download's
   * count). Its deadline grows by their time at the slowest transfer rate allowed, and
   * lasts until the answer's body is closed.
   */
  transferred?: () => number;
  /** Sent without the worker's credentials (doctor's check that the service asks for them). */
  anonymous?: boolean;
  /** Every status is an answer, none an error (doctor reads the status itself). */
  anyStatus?: boolean;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_DEADLINE_MS = 120_000;
const DEFAULT_MIN_TRANSFER_RATE = 256 * 1024;
const DEFAULT_MAX_JSON_BYTES = 1024 * 1024;
const ERROR_BODY_CAP = 2048;

/**
 * Turns `https://host`, `http://host:8080/prefix` or a bare `host` into the base URL.
 * A port inside the host wins over `port`; an https host with the default port 80
 * means 443, since nobody serves TLS on 80.
 */
export function serviceBaseUrl(service: ServiceName, host: string, port: number): URL {
  const text = host.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new WorkerError('CONFIG_INVALID', `${service} host "${text}" is not a host name or URL`, {
      hint: `give --${service}-host as a name (example.org), or a URL (https://example.org)`,
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new WorkerError(
      'CONFIG_INVALID',
      `${service} host "${text}" must use http:// or https://`,
    );
  }
  if (url.username || url.password) {
    throw new WorkerError('CONFIG_INVALID', `${service} host must not carry credentials`, {
      hint: `give them with --${service}-user and --${service}-password instead`,
    });
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new WorkerError('CONFIG_INVALID', `${service} port ${port} is not a TCP port (1-65535)`);
  }
  if (url.port === '') url.port = url.protocol === 'https:' && port === 80 ? '443' : String(port);
  url.search = '';
  url.hash = '';
  return url;
}

/** The base URL's path without its trailing slash: `` or `/prefix`. */
function pathPrefix(url: URL): string {
  return url.pathname.replace(/\/+$/, '');
}

const NETWORK_WORDS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed while sending',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed for now',
  UND_ERR_SOCKET: 'connection closed by the other side',
  UND_ERR_CLOSED: 'connection closed',
  UND_ERR_CONNECT_TIMEOUT: 'timed out connecting',
  UND_ERR_HEADERS_TIMEOUT: 'timed out waiting for an answer',
  UND_ERR_BODY_TIMEOUT: 'timed out: the answer stopped arriving',
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: 'the answer ended before its announced length',
};

/** The error codes of a failed TLS handshake or certificate check. */
const TLS_CODE = /^ERR_(SSL|TLS)_|CERT|SELF_SIGNED|UNABLE_TO_VERIFY/;

function errorCode(error: unknown): string | undefined {
  const own = (error as { code?: unknown })?.code;
  if (typeof own === 'string') return own;
  const cause = (error as { cause?: { code?: unknown } })?.cause?.code;
  return typeof cause === 'string' ? cause : undefined;
}

export class HttpService {
  readonly service: ServiceName;
  readonly baseUrl: URL;
  private readonly prefix: string;
  private readonly agent: Agent;
  private readonly authorization: string;
  private readonly errorCode: ErrorCode;
  private readonly getAttempts: number;
  private readonly retryDelayMs: number;
  private readonly deadlineMs: number;
  private readonly minTransferRate: number;
  private readonly maxJsonBytes: number;
  private readonly onError?: ServiceErrorListener;
  /** The deadline of each call's latest try, to name it when it ends a call. */
  private readonly deadlines = new WeakMap<object, Deadline>();
  private closed = false;

  constructor(service: ServiceName, options: HttpServiceOptions) {
    this.service = service;
    this.baseUrl = serviceBaseUrl(service, options.host, options.port);
    this.prefix = pathPrefix(this.baseUrl);
    const timeout = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.agent = new Agent({
      connect: { timeout },
      headersTimeout: timeout,
      bodyTimeout: timeout,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
      connections: 16,
    });
    this.authorization = `Basic ${Buffer.from(`${options.user}:${options.password}`).toString('base64')}`;
    this.errorCode = service === 'storage' ? 'STORAGE_FAILED' : 'ORCHESTRATOR_FAILED';
    this.getAttempts = Math.max(1, options.getAttempts ?? 3);
    this.retryDelayMs = options.retryDelayMs ?? 250;
    this.deadlineMs = options.deadlineMs ?? Math.max(DEFAULT_DEADLINE_MS, 2 * timeout);
    this.minTransferRate = options.minTransferRate ?? DEFAULT_MIN_TRANSFER_RATE;
    this.maxJsonBytes = options.maxJsonBytes ?? DEFAULT_MAX_JSON_BYTES;
    this.onError = options.onError;
  }

  /** "storage https://host:443" — never the credentials. */
  get description(): string {
    return `${this.service} ${this.baseUrl.origin}${this.prefix}`;
  }

  /**
   * Sends a request; answers outside `call.ok` become WorkerErrors, with their bodies
   * consumed. A GET that fails in a passing way is tried again a few times, as it changes
   * nothing; a POST is sent once, since a repeated claim or report is not the same as one.
   */
  async send(call: HttpCall): Promise<Dispatcher.ResponseData> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.sendOnce(call);
      } catch (error) {
        const failure = error as WorkerError;
        // A try that used up its whole deadline is not tried again within this call.
        const late = this.deadlines.get(call)?.signal.aborted === true;
        if (call.method !== 'GET' || !failure.retryable || late || attempt >= this.getAttempts)
          throw failure;
        try {
          await sleep(this.retryDelayMs * 4 ** (attempt - 1), undefined, { signal: call.signal });
        } catch (abort) {
          throw this.failure(call, abort);
        }
      }
    }
  }

  /**
   * One try. Its deadline runs until the answer's body is closed (read to its end or
   * destroyed), so a caller reading a body that drips is stopped too.
   */
  private async sendOnce(call: HttpCall): Promise<Dispatcher.ResponseData> {
    const url = `${this.baseUrl.origin}${this.prefix}${call.path}`;
    const deadline = new Deadline(this.deadlineMs, this.minTransferRate, call.transferred, (ms) =>
      this.deadlineError(call, ms),
    );
    this.deadlines.set(call, deadline);
    const signal = call.signal ? AbortSignal.any([call.signal, deadline.signal]) : deadline.signal;
    let response: Dispatcher.ResponseData;
    try {
      response = await request(url, {
        method: call.method,
        dispatcher: this.agent,
        headers: call.anonymous
          ? { ...call.headers }
          : { ...call.headers, authorization: this.authorization },
        body: call.body,
        signal,
      });
    } catch (error) {
      deadline.clear();
      throw this.counted(call, error);
    }
    if (response.body.destroyed) deadline.clear();
    else response.body.once('close', () => deadline.clear());
    if (call.anyStatus || call.ok.includes(response.statusCode)) return response;
    this.onError?.(this.service, String(response.statusCode));
    const body = await readCapped(response.body, ERROR_BODY_CAP);
    throw this.statusError(call, response.statusCode, body);
  }

  /**
   * The statuses the service answers `call` with the worker's credentials and without any.
   * A service's health call needs none, so this is how doctor learns that the service
   * checks credentials and accepts the worker's: it must refuse the call without them.
   */
  async credentialAnswers(call: HttpCall): Promise<CredentialAnswers> {
    const status = async (anonymous: boolean) => {
      const response = await this.sendOnce({ ...call, anonymous, anyStatus: true });
      await response.body.dump({ limit: ERROR_BODY_CAP }).catch(() => undefined);
      return response.statusCode;
    };
    return { ours: await status(false), without: await status(true) };
  }

  /**
   * Sends a request whose answer body does not matter, and consumes that body: a few
   * KiB of it at most, the connection is dropped rather than drained further.
   */
  async sendAndDrain(call: HttpCall): Promise<number> {
    const response = await this.send(call);
    try {
      await response.body.dump({ limit: ERROR_BODY_CAP });
    } catch (error) {
      throw this.counted(call, error);
    }
    return response.statusCode;
  }

  /**
   * Sends a request and parses its answer as JSON, read up to `maxJsonBytes`. An answer
   * that is larger or not JSON is the service's fault, not the task's: it is retryable,
   * so a task that needed it is tried again later, as often as the retry policy allows.
   */
  async sendForJson(call: HttpCall): Promise<unknown> {
    const response = await this.send(call);
    const cap = this.maxJsonBytes;
    const tooLarge = () =>
      new WorkerError(
        this.errorCode,
        `${this.label(call)}: the answer is larger than ${cap} bytes, the most a JSON answer may be`,
        {
          retryable: true,
          hint: `check that --${this.service}-host names the ${this.service} service`,
        },
      );
    if (Number(response.headers['content-length']) > cap) {
      response.body.destroy();
      this.onError?.(this.service, 'bad_answer');
      throw tooLarge();
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    try {
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        bytes += chunk.length;
        // Leaving the loop destroys the body: the rest is never read.
        if (bytes > cap) {
          this.onError?.(this.service, 'bad_answer');
          throw tooLarge();
        }
        chunks.push(chunk);
      }
    } catch (error) {
      throw error instanceof WorkerError ? error : this.counted(call, error);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    try {
      return JSON.parse(text);
    } catch {
      this.onError?.(this.service, 'bad_answer');
      throw new WorkerError(this.errorCode, `${this.label(call)}: the answer is not JSON`, {
        retryable: true,
        detail: cleanLines(text.slice(0, ERROR_BODY_CAP)),
      });
    }
  }

  /** failure(), told to onError unless the worker itself cancelled the call or sent a bad body. */
  private counted(call: HttpCall, error: unknown): WorkerError {
    const failure = this.failure(call, error);
    if (failure.code === 'CANCELLED' || failure.code === 'INTERNAL') return failure;
    const code = errorCode(error) ?? '';
    const kind =
      this.deadlines.get(call)?.signal.aborted || /TIMEOUT|ETIMEDOUT/.test(code)
        ? 'timeout'
        : TLS_CODE.test(code)
          ? 'tls'
          : 'connection';
    this.onError?.(this.service, kind);
    return failure;
  }

  /** Maps a thrown error (network, timeout, abort) to a WorkerError. */
  failure(call: Pick<HttpCall, 'method' | 'path' | 'signal'>, error: unknown): WorkerError {
    if (error instanceof WorkerError) return error;
    if (call.signal?.aborted) {
      const reason: unknown = call.signal.reason;
      if (reason instanceof WorkerError) return reason;
      return new WorkerError('CANCELLED', `${this.label(call)}: cancelled`, { cause: error });
    }
    const deadline = this.deadlines.get(call)?.signal;
    if (deadline?.aborted && deadline.reason instanceof WorkerError) return deadline.reason;
    const code = errorCode(error);
    const message = error instanceof Error ? error.message : String(error);
    if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') {
      return new WorkerError(
        'INTERNAL',
        `${this.label(call)}: the body sent did not match its announced length`,
        { cause: error },
      );
    }
    if (TLS_CODE.test(code ?? '')) {
      // A certificate or a scheme that does not match the server does not fix itself.
      return new WorkerError(this.errorCode, `${this.label(call)}: TLS failed (${code})`, {
        hint: `check the certificate of ${this.baseUrl.host}, and that --${this.service}-host says https:// only for a TLS port`,
        detail: message.trim(),
        cause: error,
      });
    }
    const words = (code && NETWORK_WORDS[code]) ?? message;
    return new WorkerError(this.errorCode, `${this.label(call)}: ${words} (${this.baseUrl.host})`, {
      retryable: true,
      hint:
        code === 'ECONNREFUSED' || code === 'ENOTFOUND'
          ? `check that the ${this.service} runs and --${this.service}-host/--${this.service}-port name it`
          : undefined,
      detail: words === message ? undefined : message,
      cause: error,
    });
  }

  private statusError(call: HttpCall, status: number, body: string): WorkerError {
    const said = serviceWords(body);
    const answered = `${this.label(call)} answered ${status}${said ? `: ${said}` : ''}`;
    if (status === 401 || status === 403) {
      return new WorkerError(
        this.errorCode,
        `${this.service} refused the credentials (${answered})`,
        {
          hint: `check --${this.service}-user/--${this.service}-password`,
          workerFault: true,
        },
      );
    }
    if (status === 404) {
      return new WorkerError(
        this.errorCode,
        `${this.service} has no ${call.what ?? call.path} (${answered})`,
      );
    }
    return new WorkerError(this.errorCode, answered, {
      // 5xx, 408 and 429 are the service's own trouble or load: it may pass.
      retryable: status >= 500 || status === 408 || status === 429,
      detail: said === body ? undefined : cleanLines(body),
    });
  }

  private deadlineError(call: HttpCall, ms: number): WorkerError {
    const what = call.transferred
      ? `the transfer was slower than ${this.minTransferRate} bytes a second on average`
      : 'the call did not finish in time';
    return new WorkerError(
      this.errorCode,
      `${this.label(call)}: ${what} (deadline ${ms} ms) (${this.baseUrl.host})`,
      { retryable: true },
    );
  }

  private label(call: Pick<HttpCall, 'method' | 'path'>): string {
    return `${this.service} ${call.method} ${this.prefix}${call.path}`;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.agent.close();
  }
}

/** Reads an answer's body as the service's words, capped; the rest is not read. */
export async function answerWords(body: Readable): Promise<string> {
  return serviceWords(await readCapped(body, ERROR_BODY_CAP));
}

/** A service's text, line by line without control characters, for a log or a terminal. */
function cleanLines(text: string): string {
  return text.split(/\r?\n/).map(cleanLine).join('\n');
}

/** The service's words: `{"error": "..."}` as SPEC says, else the body text itself. */
function serviceWords(body: string): string {
  const text = body.trim();
  try {
    const parsed = JSON.parse(text) as { error?: unknown };
    if (typeof parsed?.error === 'string') return cleanLine(parsed.error);
  } catch {
    // not JSON: the text is all there is
  }
  // A service's words reach logs and terminals: no control characters.
  return cleanLine(text.replace(/\s+/g, ' ').slice(0, 300));
}

/**
 * Reads the first `cap` bytes of an error answer. A body that ends within them leaves the
 * connection for reuse; a longer one is destroyed, since an endless body never ends.
 */
async function readCapped(body: Readable, cap: number): Promise<string> {
  const chunks: Buffer[] = [];
  let kept = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      chunks.push(chunk.subarray(0, cap - kept));
      kept += Math.min(chunk.length, cap - kept);
      if (kept >= cap) break; // destroys the body
    }
  } catch {
    // a broken error body: what arrived is enough to explain the status
  }
  if (!body.destroyed && kept >= cap) body.destroy();
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * A call's total deadline. For a transfer it grows with the bytes moved, by their time
 * at the slowest rate allowed: a download that keeps that pace is never cut, one that
 * drips is cut soon after the base deadline.
 */
class Deadline {
  private readonly controller = new AbortController();
  private readonly started = Date.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly baseMs: number,
    private readonly bytesPerSecond: number,
    private readonly transferred: (() => number) | undefined,
    private readonly expired: (ms: number) => WorkerError,
  ) {
    this.schedule(this.allowedMs());
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private allowedMs(): number {
    const bytes = this.transferred?.() ?? 0;
    return this.baseMs + (bytes * 1000) / this.bytesPerSecond;
  }

  private schedule(ms: number): void {
    // setTimeout holds at most 2^31-1 ms; a longer wait is checked again then.
    this.timer = setTimeout(() => this.check(), Math.min(Math.max(1, ms), 2 ** 31 - 1));
  }

  private check(): void {
    const allowed = this.allowedMs();
    const left = this.started + allowed - Date.now();
    if (left > 0) {
      this.schedule(left);
      return;
    }
    this.timer = undefined;
    this.controller.abort(this.expired(Math.round(allowed)));
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
