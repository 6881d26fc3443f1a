import { readFile } from 'node:fs/promises';
import { text } from 'node:stream/consumers';
import { WorkerError } from '../errors.js';
import { parseTask } from '../schemas.js';
import type { ParsedTask } from '../tasks/run-task.js';

/** Reads a task JSON from a file, or from standard input when the name is "-", and validates it. */
export async function readTaskFile(file: string, type?: 'learn' | 'predict'): Promise<ParsedTask> {
  const where = file === '-' ? 'standard input' : file;
  let raw: string;
  try {
    raw = file === '-' ? await text(process.stdin) : await readFile(file, 'utf8');
  } catch (error) {
    throw new WorkerError(
      'TASK_INVALID',
      `cannot read the task from ${where}: ${(error as Error).message}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (error) {
    throw new WorkerError(
      'TASK_INVALID',
      `the task in ${where} is not JSON: ${(error as Error).message}`,
    );
  }
  return parseTask(json, type);
}
