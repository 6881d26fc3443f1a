// Memory benchmark of data staging: does the worker's memory stay flat while a data blob
// of hundreds of MB goes from storage into a task's volume?
//
//   npm run build && node scripts/bench-memory.mjs [SIZE_MB]     (as root, with podman)
//
// It runs one learn task on rootful podman (runc when installed) against a storage
// server in this process that generates the train blob on the fly (SIZE_MB, default
// 512, never held in memory) and an orchestrator that accepts the report. The
// submission only counts the bytes it got. The worker's RSS is sampled every 100 ms;
// the script prints the blob size, the bytes the submission counted, and the RSS before
// and at its peak. Memory is flat when the peak stays near the baseline whatever
// SIZE_MB is (try 128 and 1024). The generating server shares the process, and streams
// with backpressure too, so a buffer on either side would show in the peak.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { HttpOrchestratorClient } from '../dist/src/clients/orchestrator.js';
import { HttpStorageClient } from '../dist/src/clients/storage.js';
import { createEngine } from '../dist/src/engine/engine.js';
import { DEFAULT_LIMITS } from '../dist/src/engine/limits.js';
import { createLogger } from '../dist/src/log.js';
import { executeTask } from '../dist/src/tasks/run-task.js';
import { parseTask } from '../dist/src/tasks/schemas.js';

const MIB = 1024 * 1024;
const sizeMb = Number(process.argv[2] ?? 512);
if (!Number.isInteger(sizeMb) || sizeMb <= 0) {
  console.error('usage: node scripts/bench-memory.mjs [SIZE_MB]');
  process.exit(2);
}
const blobBytes = sizeMb * MIB;

// One image plays both parts: the workflow copies the test data and scores everything 1;
// the submission counts the bytes of its train data and writes empty predictions.
const SCRIPT = `set -eu
task=
while [ $# -gt 0 ]; do case $1 in -T) task=$2; shift 2 ;; *) shift ;; esac; done
entries() { out=; for f in "$1"/*; do if [ -f "$f" ]; then out="$out\${out:+, }\\"\${f##*/}\\": 1"; fi; done; echo "$out"; }
case $task in
  detarget) cp /hidden_data/test/* /submission_data/test/ ;;
  train)
    for f in /data/train/*; do
      if [ -f "$f" ]; then echo "counted $(wc -c <"$f") bytes"; : >"/data/train/pred/\${f##*/}"; fi
    done
    for f in /data/test/*; do if [ -f "$f" ]; then : >"/data/test/pred/\${f##*/}"; fi; done
    echo counted >/data/model/done ;;
  perf)
    printf '{"perf": 1, "train_perf": {%s}, "test_perf": {%s}}\\n' \\
      "$(entries /submission_data/train)" "$(entries /hidden_data/test)" >/hidden_data/perf/performance.json ;;
esac
`;

async function buildContext() {
  const files = {
    Containerfile: [
      'FROM scratch',
      'COPY busybox /bin/busybox',
      'RUN ["/bin/busybox","--install","-s","/bin"]',
      'COPY bench.sh /bench.sh',
      'ENTRYPOINT ["/bin/sh", "/bench.sh"]',
      '',
    ].join('\n'),
    'bench.sh': SCRIPT,
    busybox: await readFile('/bin/busybox'),
  };
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) {
    const body = typeof content === 'string' ? Buffer.from(content) : content;
    pack.entry({ name, size: body.length, mode: name === 'busybox' ? 0o755 : 0o644 }, body);
  }
  pack.finalize();
  const chunks = [];
  for await (const chunk of pack) chunks.push(chunk);
  return gzipSync(Buffer.concat(chunks));
}

/** `bytes` bytes of CSV-like text, made as they are read from one reused 1 MiB buffer. */
function generated(bytes) {
  const line = Buffer.from('0.123,4.567,8.901,2.345,alpha\n');
  const chunk = Buffer.alloc(MIB, line);
  let left = bytes;
  return new Readable({
    read() {
      if (left === 0) return this.push(null);
      const n = Math.min(left, chunk.length);
      left -= n;
      this.push(n === chunk.length ? chunk : chunk.subarray(0, n));
    },
  });
}

/** Storage and orchestrator on 127.0.0.1, Basic Auth u:p, just enough of SPEC sections 3 and 4. */
async function startServices(ids, context) {
  const auth = `Basic ${Buffer.from('u:p').toString('base64')}`;
  const server = createServer((req, res) => {
    const send = (status, body, type = 'application/json') => {
      const data = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(data) });
      res.end(data);
    };
    req.resume();
    if (req.headers.authorization !== auth) return send(401, { error: 'unauthorized' });
    const path = (req.url ?? '').split('?')[0];
    if (req.method === 'POST') return req.on('end', () => send(path === '/model' ? 201 : 200, {}));
    if (path === `/problem/${ids.workflow}/blob` || path === `/algo/${ids.algo}/blob`) {
      return send(200, context, 'application/octet-stream');
    }
    if (path === `/data/${ids.test}/blob`) return send(200, 'f1,label\n1,alpha\n', 'text/csv');
    if (path === `/data/${ids.train}/blob`) {
      res.writeHead(200, { 'content-type': 'text/csv', 'content-length': blobBytes });
      generated(blobBytes).pipe(res);
      return;
    }
    send(404, { error: `no ${path}` });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

async function main() {
  if (!existsSync('/usr/bin/podman')) throw new Error('this benchmark needs podman');
  const ids = Object.fromEntries(
    ['uuid', 'workflow', 'algo', 'train', 'test', 'model_end'].map((k) => [k, randomUUID()]),
  );
  const server = await startServices(ids, await buildContext());
  const service = {
    host: 'http://127.0.0.1',
    port: server.address().port,
    user: 'u',
    password: 'p',
  };
  const storage = new HttpStorageClient(service);
  const orchestrator = new HttpOrchestratorClient(service);
  const tmpDir = await mkdtemp(join(tmpdir(), 'cw-bench-'));
  const env = {
    engine: await createEngine({
      engine: 'podman',
      ociRuntime: existsSync('/usr/sbin/runc') || existsSync('/usr/bin/runc') ? 'runc' : undefined,
      buildTimeoutMs: 300_000,
      callTimeoutMs: 300_000,
    }),
    storage,
    orchestrator,
    workerId: randomUUID(),
    limits: { ...DEFAULT_LIMITS, memoryBytes: 256 * MIB },
    learnTimeoutMs: 600_000,
    predictTimeoutMs: 600_000,
    workflowTimeoutMs: 600_000,
    logTailLines: 100,
    logTailBytes: 16 * 1024,
    tmpDir,
    maxPredictionBytes: 1024 ** 3,
    maxModelBytes: 10 * 1024 ** 3,
  };
  const task = parseTask({
    ...ids,
    train_data: [ids.train],
    test_data: [ids.test],
    rank: 0,
  });

  global.gc?.();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 100);
  const counted = [];
  const started = Date.now();
  const report = await executeTask(
    env,
    {
      signal: new AbortController().signal,
      onEvent: (e) => {
        if (e.type === 'log' && e.line.startsWith('counted ')) counted.push(e.line);
        if (e.type === 'step-end') console.error(`  ${e.step}: ${e.ms} ms`);
      },
    },
    task,
    createLogger({ level: 'warn' }),
  );
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  const seconds = (Date.now() - started) / 1000;

  await Promise.all([storage.close(), orchestrator.close()]);
  server.close();
  await rm(tmpDir, { recursive: true, force: true });

  const mb = (n) => `${(n / MIB).toFixed(1)} MiB`;
  console.log(
    `task:             ${report.status}${report.error ? ` (${report.error.message})` : ''}`,
  );
  console.log(`blob size:        ${mb(blobBytes)} (${blobBytes} bytes)`);
  console.log(`submission saw:   ${counted.join('; ') || 'nothing'}`);
  console.log(`RSS before:       ${mb(baseline)}`);
  console.log(`RSS peak:         ${mb(peak)} (+${mb(peak - baseline)})`);
  console.log(`task duration:    ${seconds.toFixed(1)} s`);
  if (report.status !== 'done') process.exitCode = 1;
}

await main();
