import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract as tarExtract } from 'tar-stream';
import { formatSize } from '../config/size.js';
import { toWorkerError, WorkerError } from '../errors.js';
import {
  archiveRejected,
  type CheckedHeader,
  EntryPolicy,
  type NotPlain,
  type PolicyOptions,
  rawByteCap,
  resolveLimits,
  type SizeBudget,
  TAR_STREAM_MAX_HEADER_BYTES,
  type TarLimits,
} from './tar-policy.js';

export interface ReadOptions {
  gzip: boolean;
  limits?: Partial<TarLimits>;
  /** Names the archive in messages, e.g. "model archive"; "archive" when unset. */
  label?: string;
  scope?: string;
  dropUnsafeLinks?: boolean;
  /** A cap set by a person: raw (decompressed) bytes and declared sizes count against it. */
  budget?: SizeBudget;
  plainOnly?: (entry: NotPlain) => WorkerError;
}

export interface CheckedEntry extends CheckedHeader {
  /** The entry's data. Read it to the end or not at all: stopping halfway aborts the archive. */
  body: AsyncIterable<Buffer>;
}

/**
 * Yields the checked entries of an untrusted (optionally gzipped) tar stream, one at a time,
 * with the input paused until the caller asks for the next one. Anything the policy refuses,
 * a corrupt gzip stream or truncated tar, ends the iteration with an ARCHIVE_REJECTED
 * WorkerError; an error of the input stream itself is rethrown as it is (wrapped if it is not
 * a WorkerError), because that is the supplier's failure, not the archive's.
 */
export async function* readTarEntries(
  input: Readable,
  options: ReadOptions,
): AsyncGenerator<CheckedEntry, { entries: number; bytes: number }> {
  const { budget } = options;
  // The budget decides about sizes, with its own message; the default caps must not come first.
  const limits = resolveLimits(
    budget
      ? { maxTotalBytes: budget.maxBytes, maxEntryBytes: budget.maxBytes, ...options.limits }
      : options.limits,
  );
  const label = options.label ?? 'archive';
  const policyOptions: PolicyOptions = { label, limits };
  if (options.scope !== undefined) policyOptions.scope = options.scope;
  if (options.dropUnsafeLinks) policyOptions.dropUnsafeLinks = true;
  if (budget) policyOptions.budget = budget;
  if (options.plainOnly) policyOptions.plainOnly = options.plainOnly;
  const policy = new EntryPolicy(policyOptions);

  const extract = tarExtract();
  // tar-stream's streamx streams work in node pipelines but are not typed as node streams.
  const stages: (NodeJS.ReadableStream | NodeJS.WritableStream)[] = [
    input,
    ...(options.gzip ? [createGunzip()] : []),
    new ByteCap(rawByteCap(limits), label, budget),
    extract as unknown as NodeJS.WritableStream,
  ];
  // The stage that fails first is the cause; the pipeline then destroys the others with its error.
  let first: { error: unknown; fromInput: boolean } | undefined;
  const watchers = stages.map((stage) => {
    const watch = (error: unknown) => {
      first ??= { error, fromInput: stage === input };
    };
    stage.on('error', watch);
    return () => stage.off('error', watch);
  });
  // Errors surface through the extract iterator; this keeps the pipeline's own rejection handled.
  const piped = pipeline(stages).then(
    () => undefined,
    (error: unknown) => error,
  );

  // Once the pipeline has settled, the first failing stage is known and explains the failure.
  const failure = async (error: unknown): Promise<WorkerError> => {
    if (error instanceof WorkerError) return error;
    await piped;
    return first ? classify(first.error, first.fromInput, label) : classify(error, false, label);
  };
  async function* body(entry: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    try {
      yield* entry;
    } catch (error) {
      throw await failure(error);
    }
  }

  try {
    for await (const entry of extract) {
      const checked = policy.check(entry.header);
      const data = body(entry as AsyncIterable<Buffer>);
      if (checked !== undefined) yield { ...checked, body: data };
      await drain(data);
    }
    const error = await piped;
    if (error) throw error;
    return policy.totals;
  } catch (error) {
    throw await failure(error);
  } finally {
    for (const unwatch of watchers) unwatch();
    if (!extract.destroyed) extract.destroy();
    if (!input.destroyed) input.destroy();
  }
}

async function drain(entry: AsyncIterable<Buffer>): Promise<void> {
  for await (const _chunk of entry) {
    // skipped data
  }
}

const DAMAGED_HINT =
  'Check that the file is a complete .tar (or .tar.gz) archive and upload it again.';

function classify(error: unknown, fromInput: boolean, label: string): WorkerError {
  if (error instanceof WorkerError) return error;
  if (fromInput) return toWorkerError(error);
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('Z_')) {
    return archiveRejected(`${label} is not valid gzip data or is cut short`, {
      detail: message,
      hint: DAMAGED_HINT,
    });
  }
  if (message === 'Unexpected end of data') {
    return archiveRejected(`${label} ends in the middle of an entry: the tar data is truncated`, {
      hint: DAMAGED_HINT,
    });
  }
  if (message === 'Header exceeds max size') {
    return archiveRejected(
      `${label} has a pax or long-name header larger than ${formatSize(TAR_STREAM_MAX_HEADER_BYTES)}`,
    );
  }
  return archiveRejected(`${label} is not a valid tar archive`, {
    detail: message,
    hint: DAMAGED_HINT,
  });
}

/** Stops a stream that goes on far past anything its entries can explain. */
class ByteCap extends Transform {
  private seen = 0;

  constructor(
    private readonly cap: number,
    private readonly label: string,
    private readonly budget?: SizeBudget,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    try {
      this.budget?.charge(chunk.length);
    } catch (error) {
      callback(error as Error);
      return;
    }
    if (this.seen > this.cap) {
      callback(
        archiveRejected(
          `${this.label} is longer than its entries can explain (more than ${formatSize(this.cap)} of tar data)`,
        ),
      );
      return;
    }
    callback(null, chunk);
  }
}
