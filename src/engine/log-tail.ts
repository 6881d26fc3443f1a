import { StringDecoder } from 'node:string_decoder';
import { cleanLine } from '../config/text.js';

export { cleanLine };

/**
 * Keeps the last lines of a stream of text, bounded both in lines and in bytes, so a
 * chatty container or build never grows the worker's memory.
 */
export class LogTail {
  private readonly lines: string[] = [];
  private bytes = 0;
  private dropped = false;

  constructor(
    private readonly maxLines: number,
    private readonly maxBytes: number,
  ) {}

  push(line: string): void {
    // One huge line keeps only its end: the end of an error is what explains it.
    const kept = line.length > this.maxBytes ? line.slice(line.length - this.maxBytes) : line;
    this.lines.push(kept);
    this.bytes += Buffer.byteLength(kept) + 1;
    while (
      this.lines.length > this.maxLines ||
      (this.bytes > this.maxBytes && this.lines.length > 0)
    ) {
      const first = this.lines.shift() as string;
      this.bytes -= Buffer.byteLength(first) + 1;
      this.dropped = true;
    }
  }

  get truncated(): boolean {
    return this.dropped;
  }

  toString(): string {
    return this.lines.join('\n');
  }
}

/**
 * Splits chunks of a byte stream into clean lines (see cleanLine); a trailing partial
 * line is flushed at the end. Every line of container and build output passes here.
 */
export class LineSplitter {
  private rest = '';
  // Decodes UTF-8 across chunk boundaries; invalid bytes become U+FFFD.
  private readonly decoder = new StringDecoder('utf8');

  constructor(private readonly onLine: (line: string) => void) {}

  write(chunk: Buffer | string): void {
    const text = this.rest + (typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
    const parts = text.split('\n');
    this.rest = parts.pop() ?? '';
    // A line that never ends is still bounded: pass it on in pieces.
    if (this.rest.length > 64 * 1024) {
      parts.push(this.rest);
      this.rest = '';
    }
    for (const part of parts)
      this.onLine(cleanLine(part.endsWith('\r') ? part.slice(0, -1) : part));
  }

  end(): void {
    const last = this.rest + this.decoder.end();
    if (last) this.onLine(cleanLine(last));
    this.rest = '';
  }
}
