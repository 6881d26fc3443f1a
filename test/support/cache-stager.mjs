// A process that stages one data set into the host's data cache, as a task of a worker
// does, for a test to kill half-way: node cache-stager.mjs '<json options>'.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const options = JSON.parse(process.argv[2]);
const dist = (file) => import(pathToFileURL(join(options.root, 'dist/src', file)).href);
const { HttpStorageClient } = await dist('clients/storage.js');
const { createEngine } = await dist('container-engine.js');
const { DEFAULT_LIMITS } = await dist('engine/limits.js');
const { stageDataSet } = await dist('tasks/data-sets.js');

const storage = new HttpStorageClient({ ...options.storage, user: 'u' });
const engine = await createEngine(options.engine);
const runId = randomUUID();
const scope = {
  runId,
  labels: { 'compute-worker.run': runId },
  tmp: options.tmp,
  releases: [],
  disks: new Map(),
};
const env = {
  engine,
  storage,
  limits: DEFAULT_LIMITS,
  workerId: randomUUID(),
  dataCache: options.dataCache,
};
await stageDataSet(env, { signal: new AbortController().signal }, scope, 'train', options.set);
