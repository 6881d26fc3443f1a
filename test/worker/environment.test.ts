import { randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { workerTmpDir } from '../../src/config/paths.js';
import { contextTarGz } from '../../src/engine/probe-context.js';
import { busyboxContext } from '../support/busybox-context.js';
import { type Harness, reportsOf, TOPIC, useHarness } from '../support/worker-harness.js';
import { hasPodman, requireEngines } from '../support/worker-process.js';

// Nothing of the worker's own environment reaches a container: not its secrets (passed
// to it as variables, as an operator should), not any other variable, not a proxy with
// credentials, not a host folder of the worker. A submission dumps all it can see, from
// a build RUN step and from its predict run, into its prediction and its log.

const DUMP = `#!/bin/sh
# -V /data -T predict: everything this container can see, into its prediction.
out=/data/test/pred/$(ls /data/test | grep -v '^pred$' | head -n 1)
{
  echo '== build'; cat /etc/build-env.txt
  echo '== env'; env
  echo '== self'; tr '\\0' '\\n' </proc/self/environ
  echo '== init'; tr '\\0' '\\n' </proc/1/environ || echo 'init environ unreadable'
  echo '== mountinfo'; cat /proc/self/mountinfo
  echo '== mounts'; cat /proc/mounts
  echo '== end'
} >"$out" 2>&1
cat "$out"
`;

const dumper = () =>
  busyboxContext({
    // A fresh context each run: a cached image would print no build output.
    files: { 'dump.sh': DUMP, nonce: randomUUID() },
    extraLines: [
      "RUN env >/etc/build-env.txt && tr '\\0' '\\n' </proc/self/environ >>/etc/build-env.txt && env",
      'COPY dump.sh /dump.sh',
      'USER 1000:1000',
      'ENTRYPOINT ["/bin/sh", "/dump.sh"]',
    ],
  });

describe.skipIf(!hasPodman && !requireEngines)("the worker's environment", () => {
  let h: Harness;
  useHarness({ msgTimeoutMs: 10_000 }, (started) => {
    h = started;
  });

  it('reaches neither the build nor the containers of a task', async () => {
    const token = `t0ken-${randomBytes(8).toString('hex')}`;
    const proxySecret = `pr0xy-${randomBytes(6).toString('hex')}`;
    const algo = randomUUID();
    const model = randomUUID();
    const data = randomUUID();
    const uuid = randomUUID();
    h.storage.seed('algo', algo, { blob: await dumper() });
    h.storage.seed('model', model, {
      blob: await contextTarGz({ 'model.txt': 'trained\n' }),
      meta: { uuid: model, algo, timestamp_upload: 1 },
    });
    h.storage.seed('data', data, { blob: 'x\n' });
    h.orchestrator.addTask('preduplet', uuid);
    const body = {
      uuid,
      problem: h.fixtures.workflowUuid,
      workflow: h.fixtures.workflowUuid,
      model,
      data,
      worker: null,
      status: 'todo',
      prediction_storage_uuid: null,
    };
    const stateDir = await h.fleet.newStateDir();
    const worker = await h.fleet.start(await h.args(['--log-level', 'debug'], stateDir), {
      env: {
        ...h.env,
        SECRET_TOKEN: token,
        HTTP_PROXY: `http://user:${proxySecret}@127.0.0.1:9`,
        https_proxy: `http://user:${proxySecret}@127.0.0.1:9`,
      },
    });
    h.nsqd.publish(TOPIC.predict, JSON.stringify(body));
    await worker.waitForLine(
      (l) => l.task === uuid && (l.msg === 'task done' || l.msg.startsWith('task failed')),
      300_000,
      'the task to end',
    );
    const report = reportsOf(h.orchestrator, uuid)[0];
    expect(report?.body.status).toBe('done');
    const prediction = h.storage
      .blob('prediction', report?.body.prediction_storage_uuid as string)
      ?.toString('utf8');
    // The dump is complete: the build step ran, and each part was written.
    expect(prediction).toMatch(/== build\n.*PATH=.*== env\n.*== self\n.*== init\n/s);
    expect(prediction).toContain('== end');
    const secrets = [
      h.passwords.storage,
      h.passwords.orchestrator,
      token,
      proxySecret,
      'SECRET_TOKEN',
      'COMPUTE_WORKER_',
      'NODE_NO_WARNINGS',
      'VITEST',
    ];
    for (const secret of secrets) expect(prediction).not.toContain(secret);
    // The build's RUN step printed its environment into the worker's log too.
    const buildEnv = worker.lines.filter((l) => l.step === 'build-submission');
    expect(buildEnv.some((l) => l.msg.startsWith('PATH='))).toBe(true);
    for (const line of worker.lines)
      for (const secret of secrets.slice(2, 4)) expect(line.msg).not.toContain(secret);

    // No folder of the worker is mounted: each mount's source, as mountinfo shows it.
    const mountinfo = (prediction ?? '').split('== mountinfo\n')[1]?.split('== mounts\n')[0] ?? '';
    const roots = mountinfo
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(' ')[3] as string);
    expect(roots.some((root) => root.includes('/volumes/cw-vol-'))).toBe(true);
    const id = await worker.workerId();
    for (const root of roots) {
      expect(root).not.toContain(stateDir);
      expect(root).not.toContain(workerTmpDir(id));
      expect(root).not.toContain(process.cwd());
    }
  }, 400_000);
});
