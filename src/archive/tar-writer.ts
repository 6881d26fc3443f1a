import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { type Header, type Pack, pack as tarPack } from 'tar-stream';
import { toWorkerError, WorkerError } from '../errors.js';

export interface Owner {
  uid: number;
  gid: number;
}

/** Folders first, then entries: the plain header fields every written entry gets. */
export interface WriteHeader {
  name: string;
  mode: number;
  mtime?: Date;
}

/**
 * Writes entries one after another into a tar-stream pack, waiting for the reader of the
 * archive before taking more data, so no entry is ever held in memory whole.
 */
export class TarWriter {
  constructor(
    private readonly pack: Pack,
    private readonly owner: Owner,
  ) {}

  directory(header: WriteHeader): Promise<void> {
    const name = header.name.endsWith('/') ? header.name : `${header.name}/`;
    return this.voidEntry({ ...header, name, type: 'directory' });
  }

  symlink(header: WriteHeader, target: string): Promise<void> {
    return this.voidEntry({ ...header, type: 'symlink', linkname: target });
  }

  hardlink(header: WriteHeader, target: string): Promise<void> {
    return this.voidEntry({ ...header, type: 'link', linkname: target });
  }

  /** Writes exactly `size` bytes from `body`; a body that gives more or fewer is an error. */
  async file(
    header: WriteHeader,
    size: number,
    body: AsyncIterable<Uint8Array>,
    onMismatch: (written: number) => Error,
  ): Promise<void> {
    const { sink, done } = this.entry({ ...header, type: 'file', size });
    let written = 0;
    for await (const chunk of body) {
      written += chunk.length;
      if (written > size) throw onMismatch(written);
      if (!sink.write(chunk)) await drained(sink);
    }
    if (written !== size) throw onMismatch(written);
    sink.end(null);
    await done;
  }

  private voidEntry(header: EntryHeader): Promise<void> {
    return this.entry(header).done;
  }

  private entry(header: EntryHeader): { sink: Sink; done: Promise<void> } {
    let settle: (error?: Error | null) => void = () => {};
    const done = new Promise<void>((resolve, reject) => {
      settle = (error) => (error ? reject(error) : resolve());
    });
    // Whoever fails first reports; a later rejection of `done` must not go unhandled.
    done.catch(() => {});
    const sink = this.pack.entry(
      {
        mtime: new Date(0),
        ...header,
        uid: this.owner.uid,
        gid: this.owner.gid,
        uname: '',
        gname: '',
      },
      settle,
    );
    // When the archive's reader fails (a CLI that exits early breaks its pipe), the pack
    // tears down the open entry with that error; its emitter would throw it without a
    // listener. `settle` and the archive's own stream already carry it.
    sink.on('error', () => {});
    return { sink, done };
  }
}

type EntryHeader = Partial<Header> & { name: string };
type Sink = ReturnType<Pack['entry']>;

/** Waits until a streamx writable wants more, or fails if it is torn down first. */
function drained(sink: Sink): Promise<void> {
  return new Promise((resolve, reject) => {
    if (sink.destroyed || sink.destroying) {
      reject(new Error('the tar output was closed'));
      return;
    }
    const cleanup = () => {
      sink.off('drain', onDrain);
      sink.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new Error('the tar output was closed'));
    };
    sink.on('drain', onDrain);
    sink.on('close', onClose);
  });
}

/**
 * Runs `produce` against a fresh tar writer and returns the archive as a node stream (gzipped
 * when asked). A failure of `produce` is emitted on the returned stream as a WorkerError; when
 * the reader goes away early, `signal` tells `produce` to stop.
 */
export function writeTar(
  owner: Owner,
  options: { gzip: boolean },
  produce: (writer: TarWriter, signal: AbortSignal) => Promise<void>,
): Readable {
  const pack = tarPack();
  const out = new PassThrough();
  const stop = new AbortController();
  const stages = [
    pack as unknown as NodeJS.ReadableStream,
    ...(options.gzip ? [createGzip()] : []),
    out,
  ] as const;
  pipeline(stages).catch(() => {
    // the reader left early or produce failed; both are reported below
    stop.abort();
  });
  out.once('close', () => stop.abort());
  produce(new TarWriter(pack, owner), stop.signal).then(
    () => pack.finalize(),
    (error: unknown) => {
      stop.abort();
      out.destroy(error instanceof WorkerError ? error : toWorkerError(error));
      pack.destroy();
    },
  );
  return out;
}
