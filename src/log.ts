import { createRequire } from 'node:module';
import { type Logger as PinoLogger, pino } from 'pino';
import type PinoPretty from 'pino-pretty';

// Loaded only for text logs: about 30 modules a run with JSON logs (every task exec whose
// stderr is not a terminal, a daemon under systemd) need not compile.
const require = createRequire(import.meta.url);

export type Logger = PinoLogger;

export interface LogOptions {
  level?: string;
  /** json: one object a line; text: readable lines; auto: text on a terminal, else json. */
  format?: 'json' | 'text' | 'auto';
  /** Where lines go; stderr by default so stdout stays free for --json results. */
  fd?: 1 | 2;
}

// Secrets can reach a log line through an options object or an error's cause;
// pino removes these paths before anything is written.
const REDACT = [
  'password',
  '*.password',
  '*.*.password',
  'storagePassword',
  'orchestratorPassword',
  'authorization',
  '*.authorization',
  'headers.authorization',
];

export function createLogger(options: LogOptions = {}): Logger {
  const fd = options.fd ?? 2;
  const terminal = process[fd === 1 ? 'stdout' : 'stderr'].isTTY === true;
  const format =
    options.format === 'auto' || options.format === undefined
      ? terminal
        ? 'text'
        : 'json'
      : options.format;
  const base = {
    level: options.level ?? 'info',
    redact: { paths: REDACT, censor: '[redacted]' },
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (format === 'text') {
    // Synchronous, in this thread: a CLI that exits must not lose its last lines.
    const pretty = require('pino-pretty') as typeof PinoPretty;
    const stream = pretty({
      destination: fd,
      sync: true,
      // Colour codes only for a terminal: a file or a pipe gets plain text.
      colorize: terminal,
      translateTime: 'SYS:HH:MM:ss',
      ignore: 'pid,hostname',
    });
    return pino(base, stream);
  }
  // Level names ("level":"warn"), not pino's numbers: what a log search or a person reads.
  return pino(
    { ...base, formatters: { level: (label: string) => ({ level: label }) } },
    pino.destination({ fd, sync: true }),
  );
}

/** A logger that writes nothing, for library callers and tests that do not care. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
