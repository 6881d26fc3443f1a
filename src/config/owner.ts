import { WorkerError } from '../errors.js';

/** Numeric owner of the files the worker puts in volumes: the containers' user. */
export function containerOwner(user: string): { uid: number; gid: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!m) {
    throw new WorkerError(
      'CONFIG_INVALID',
      `--user must be numeric uid or uid:gid, got "${user}"`,
      {
        hint: 'the worker writes volume files owned by this id, so a user name cannot be used',
      },
    );
  }
  const uid = Number(m[1]);
  return { uid, gid: m[2] === undefined ? uid : Number(m[2]) };
}
