import { readFile } from 'node:fs/promises';
import { WorkerError } from '../errors.js';
import type { ServiceErrorListener } from './http.js';
import { LocalOrchestratorClient } from './local-orchestrator.js';
import { LocalStorageClient } from './local-storage.js';
import { HttpOrchestratorClient } from './orchestrator.js';
import { HttpStorageClient } from './storage.js';
import type { OrchestratorClient, StorageClient } from './types.js';

export interface ServiceOptions {
  /** Blank = the built-in local service. `host`, `http://host` or `https://host[:port][/prefix]`. */
  host: string;
  port: number;
  user: string;
  password: string;
  /** Connect timeout and longest silence of one request (default 30 s). */
  timeoutMs?: number;
  /** Told of each failed call of an HTTP service (see HttpServiceOptions.onError). */
  onError?: ServiceErrorListener;
}

/** The storage named by the flags, or the storage folder `localDir` when the host is blank. */
export function createStorageClient(options: ServiceOptions & { localDir: string }): StorageClient {
  if (options.host.trim() === '') return new LocalStorageClient(options.localDir);
  return new HttpStorageClient(options);
}

/** The orchestrator named by the flags, or the ledger file `ledgerFile` when the host is blank. */
export function createOrchestratorClient(
  options: ServiceOptions & { ledgerFile: string },
): OrchestratorClient {
  if (options.host.trim() === '') return new LocalOrchestratorClient(options.ledgerFile);
  return new HttpOrchestratorClient(options);
}

/** A password kept in a file (so it is not in `ps`); one trailing newline is not part of it. */
export async function readPasswordFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new WorkerError('CONFIG_INVALID', `cannot read the password file ${path}`, {
      detail: (error as Error).message,
      hint: 'give a readable file, or the password itself by its flag or environment variable',
      cause: error,
    });
  }
  return text.replace(/\r?\n$/, '');
}
