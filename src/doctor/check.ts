import { toWorkerError } from '../errors.js';

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

/** One finding about the host, as doctor prints it. */
export interface Check {
  name: string;
  status: CheckStatus;
  message: string;
  hint?: string;
  detail?: string;
}

export function pass(name: string, message: string): Check {
  return { name, status: 'pass', message };
}

export function warn(name: string, message: string, hint?: string): Check {
  return { name, status: 'warn', message, ...(hint ? { hint } : {}) };
}

export function skip(name: string, message: string): Check {
  return { name, status: 'skip', message };
}

export function fail(name: string, message: string, error?: unknown, hint?: string): Check {
  const e = error === undefined ? undefined : toWorkerError(error);
  const text = e ? `${message}: ${e.message}` : message;
  const h = hint ?? e?.hint;
  return {
    name,
    status: 'fail',
    message: text,
    ...(h ? { hint: h } : {}),
    ...(e?.detail ? { detail: e.detail } : {}),
  };
}

const MARK = { pass: 'ok  ', warn: 'warn', fail: 'FAIL', skip: 'skip' } as const;

/** A check as a person reads it: its mark, name and message, then its hint and detail. */
export function describeCheck(check: Check): string {
  let text = `[${MARK[check.status]}] ${check.name}: ${check.message}\n`;
  if (check.hint) text += `       hint: ${check.hint}\n`;
  if (check.detail) text += `${check.detail.replace(/^/gm, '       | ')}\n`;
  return text;
}
